//! Boots side by side while the next kernels are still being prepared: the caller's `prepare` (kernel downloads,
//! test-module builds) runs on the calling thread and hands over each boot as soon as it is ready; `parallel`
//! workers take them in that order. Downloads wait on the network, so the first guests run while the later kernels
//! arrive, instead of every boot waiting for every download.

use std::{
    collections::VecDeque,
    sync::{Condvar, Mutex},
    thread,
};

struct Queue<B> {
    items: VecDeque<(usize, B)>,
    /// No more items will come.
    closed: bool,
    handed: usize,
}

/// Runs `run` on each item `prepare` hands over (through the function it is given), `parallel` at a time; the
/// results come back in the order the items were handed over.
pub fn run_while_preparing<B: Send, R: Send>(
    parallel: usize,
    prepare: impl FnOnce(&mut dyn FnMut(B)),
    run: impl Fn(B) -> R + Sync,
) -> Vec<R> {
    let queue = Mutex::new(Queue { items: VecDeque::new(), closed: false, handed: 0 });
    let ready = Condvar::new();
    let results: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| {
                loop {
                    let next = {
                        let mut q = queue.lock().expect("boot queue");
                        loop {
                            if let Some(item) = q.items.pop_front() {
                                break Some(item);
                            }
                            if q.closed {
                                break None;
                            }
                            q = ready.wait(q).expect("boot queue");
                        }
                    };
                    let Some((i, item)) = next else { break };
                    let r = run(item);
                    results.lock().expect("boot results").push((i, r));
                }
            });
        }
        // Closes the queue however `prepare` ends (a panic included), so that the workers stop.
        struct Close<'a, B>(&'a Mutex<Queue<B>>, &'a Condvar);
        impl<B> Drop for Close<'_, B> {
            fn drop(&mut self) {
                self.0.lock().unwrap_or_else(|e| e.into_inner()).closed = true;
                self.1.notify_all();
            }
        }
        let _close = Close(&queue, &ready);
        prepare(&mut |item| {
            let mut q = queue.lock().expect("boot queue");
            let i = q.handed;
            q.handed += 1;
            q.items.push_back((i, item));
            drop(q);
            ready.notify_one();
        });
    });
    let mut results = results.into_inner().expect("boot results");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[test]
    fn items_run_while_later_ones_are_prepared_and_results_keep_the_order() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let started_before_prepared = AtomicUsize::new(0);
        let prepared = AtomicUsize::new(0);
        let out = run_while_preparing(
            2,
            |hand: &mut dyn FnMut(usize)| {
                for i in 0..6 {
                    hand(i);
                    thread::sleep(Duration::from_millis(20));
                    prepared.fetch_add(1, Ordering::SeqCst);
                }
            },
            |i| {
                if prepared.load(Ordering::SeqCst) < 6 {
                    started_before_prepared.fetch_add(1, Ordering::SeqCst);
                }
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(30 - 4 * i as u64));
                running.fetch_sub(1, Ordering::SeqCst);
                i * 10
            },
        );
        assert_eq!(out, [0, 10, 20, 30, 40, 50]);
        assert!(most.load(Ordering::SeqCst) <= 2, "more than two at a time");
        assert!(started_before_prepared.load(Ordering::SeqCst) > 0, "no item started before the last was prepared");
    }

    #[test]
    fn nothing_handed_over_ends_with_no_result() {
        let out: Vec<()> = run_while_preparing(3, |_hand: &mut dyn FnMut(())| {}, |()| ());
        assert!(out.is_empty());
    }
}
