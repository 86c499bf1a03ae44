//! Single flight for `/metrics`: a request that arrives while a collection is running waits for that collection and
//! gets its result instead of starting its own. At 10k cgroups one collection costs tens of milliseconds of CPU;
//! without this, ten concurrent scrapers (Prometheus HA pairs, dashboards hitting the agent, `wrk`) queue ten
//! collections behind each other and each waits for all of them.
//!
//! A result is handed to every request that arrived before it was finished, so what a request sees may have been
//! read from the maps up to one collection time before the request arrived — never older.

use std::{sync::Arc, time::Instant};

use tokio::sync::Mutex;

pub struct Coalesced<T> {
    /// The last result and when it was finished. The lock is held for the whole collection, so waiting for it is
    /// waiting for the collection in flight (tokio's mutex is fair: waiters are served in arrival order).
    last: Mutex<Option<(Instant, Arc<T>)>>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Self { last: Mutex::new(None) }
    }
}

impl<T> Coalesced<T> {
    /// The result of a collection finished after this call began: the one in flight, or a new one by `collect`.
    /// A failed collection is not shared; the next caller tries again.
    pub async fn get<E, F, Fut>(&self, collect: F) -> Result<Arc<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let arrived = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((finished, value)) = last.as_ref()
            && *finished >= arrived
        {
            return Ok(value.clone());
        }
        let value = Arc::new(collect().await?);
        *last = Some((Instant::now(), value.clone()));
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

    /// Ten concurrent requests during a 200 ms collection: the first starts it, the other nine share it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_the_collection_in_flight() {
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
            assert_eq!(*r.await.unwrap().unwrap(), 1, "a request that arrived during collection 1 got another");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // A request after that collection finished gets a fresh one.
        assert_eq!(*coalesced.get(|| collect(calls.clone())).await.unwrap(), 2);
    }

    #[tokio::test]
    async fn a_failed_collection_is_not_shared() {
        let coalesced = Coalesced::<u32>::default();
        assert_eq!(coalesced.get(|| async { Err::<u32, _>("boom") }).await.unwrap_err(), "boom");
        assert_eq!(*coalesced.get(|| async { Ok::<_, &str>(7) }).await.unwrap(), 7);
    }
}
