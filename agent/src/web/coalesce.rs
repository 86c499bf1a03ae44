//! Single flight for `/metrics`: a request that arrives while a collection is running waits for that collection and
//! gets its result instead of starting its own. At 10k cgroups one collection costs tens of milliseconds of CPU;
//! without this, ten concurrent scrapers (Prometheus HA pairs, dashboards hitting the agent, `wrk`) queue ten
//! collections behind each other and each waits for all of them.
//!
//! A result is shared only by requests that arrived before its collection started, so every response reflects the
//! maps as read after the request arrived (a client that scrapes right after an event sees it). A request that
//! arrives while a collection runs therefore waits for the next one, which it shares with the others that arrived
//! meanwhile: at most two collection times.

use std::{sync::Arc, time::Instant};

use tokio::sync::Mutex;

pub struct Coalesced<T> {
    /// The last result and when its collection started. The lock is held for the whole collection, so waiting for it
    /// is waiting for the collection in flight (tokio's mutex is fair: waiters are served in arrival order).
    last: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Self { last: Mutex::new(None) }
    }
}

impl<T> Coalesced<T> {
    /// The result of a collection started after this call began: one that another waiting caller started, or a
    /// new one by `collect`. A failed collection is not shared; the next caller tries again.
    pub async fn get<E, F, Fut>(&self, collect: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((started, value)) = last.as_ref()
            && *started >= arrived
        {
            return Ok(value.clone());
        }
        let started = Instant::now();
        let value = Arc::new(collect().await?);
        *last = Some((started, value.clone()));
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    /// Nine requests arrive during a 200 ms collection: none gets that collection's (older) result; they share
    /// the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_during_a_collection_share_the_next_one() {
        let coalesced = Arc::new(Coalesced::<usize>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let collect = |calls: Arc<AtomicUsize>| async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, ()>(n)
        };
        let first = {
            let (c, calls) = (coalesced.clone(), calls.clone());
            tokio::spawn(async move { c.get(|| collect(calls)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await; // the first collection is in flight now
        let rest: Vec<_> = (0..9)
            .map(|_| {
                let (c, calls) = (coalesced.clone(), calls.clone());
                tokio::spawn(async move { c.get(|| collect(calls)).await })
            })
            .collect();
        assert_eq!(*first.await.unwrap().unwrap(), 1);
        for r in rest {
            assert_eq!(*r.await.unwrap().unwrap(), 2, "a request got a collection that started before it arrived");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2, "the nine waiting requests did not share one collection");
        // A request after that gets a fresh one.
        assert_eq!(*coalesced.get(|| collect(calls.clone())).await.unwrap(), 3);
    }

    #[tokio::test]
    async fn a_failed_collection_is_not_shared() {
        let coalesced = Coalesced::<u32>::default();
        assert_eq!(coalesced.get(|| async { Err::<u32, _>("boom") }).await.unwrap_err(), "boom");
        assert_eq!(*coalesced.get(|| async { Ok::<_, &str>(7) }).await.unwrap(), 7);
    }
}
