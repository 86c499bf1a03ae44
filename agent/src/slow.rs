//! Slow brackets for `/api/v1/slow`: the bracket programs send every bracket at least as long as
//! `--slow.min-duration` through a ring buffer (fentry and kprobe modes); a task here keeps the most
//! recent ones in a bounded log.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use mmuscope_abi::{SlowBracket, names};

use crate::probes::Probes;

/// Records kept: enough for a storm's worth of context, small enough to sort per request.
pub const CAPACITY: usize = 4096;

/// The most recent slow brackets, oldest first.
#[derive(Default)]
pub struct SlowLog {
    records: Mutex<VecDeque<SlowBracket>>,
}

impl SlowLog {
    pub fn push(&self, record: SlowBracket) {
        let mut r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() == CAPACITY {
            r.pop_front();
        }
        r.push_back(record);
    }

    /// The `limit` slowest records of at least `min_ns` (of process `pid` only, if given), slowest first.
    pub fn slowest(&self, min_ns: u64, pid: Option<u32>, limit: usize) -> Vec<SlowBracket> {
        let r = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = |b: &&SlowBracket| b.duration_ns >= min_ns && pid.is_none_or(|p| b.tgid == p);
        let mut out: Vec<SlowBracket> = r.iter().filter(wanted).copied().collect();
        out.sort_by(|a, b| b.duration_ns.cmp(&a.duration_ns).then(b.t_end_ns.cmp(&a.t_end_ns)));
        out.truncate(limit);
        out
    }
}

/// Starts the task that moves records from the kernel's ring buffer into `log`.
pub fn spawn_reader(probes: &mut Probes, log: Arc<SlowLog>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    crate::ringbuf::spawn_reader(probes, names::SLOW_EVENTS, "/api/v1/slow stops updating", move |item| {
        if let Some(record) = parse(item) {
            log.push(record);
        }
    })
}

fn parse(bytes: &[u8]) -> Option<SlowBracket> {
    (bytes.len() >= size_of::<SlowBracket>())
        // SAFETY: `SlowBracket` is plain old data (`#[repr(C)]`, integers only) and the length is checked.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<SlowBracket>()) })
}

/// `CLOCK_MONOTONIC` now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(duration_ns: u64, t_end_ns: u64) -> SlowBracket {
        SlowBracket { duration_ns, t_end_ns, ..Default::default() }
    }

    #[test]
    fn keeps_the_newest_and_returns_the_slowest_first() {
        let log = SlowLog::default();
        for i in 0..(CAPACITY as u64 + 10) {
            log.push(record(i % 100, i));
        }
        let all = log.slowest(0, None, usize::MAX);
        assert_eq!(all.len(), CAPACITY, "bounded");
        assert!(all.iter().all(|r| r.t_end_ns >= 10), "the oldest were dropped");
        let top = log.slowest(50, None, 3);
        assert_eq!(top.iter().map(|r| r.duration_ns).collect::<Vec<_>>(), [99, 99, 99]);
        assert!(top[0].t_end_ns > top[1].t_end_ns, "ties: newest first");
        assert!(log.slowest(100, None, 10).is_empty());
        log.push(SlowBracket { tgid: 42, ..record(1, u64::MAX) });
        assert_eq!(log.slowest(0, Some(42), 10).len(), 1);
    }

    #[test]
    fn frames_are_the_filled_part_of_the_stack() {
        let mut r = record(1, 1);
        assert!(r.frames().is_empty(), "no stack taken");
        r.stack[..3].copy_from_slice(&[10, 20, 30]);
        r.stack_bytes = 24;
        assert_eq!(r.frames(), [10, 20, 30]);
        r.stack_bytes = u32::MAX; // never past the array, whatever the kernel wrote
        assert_eq!(r.frames().len(), r.stack.len());
    }

    #[test]
    fn short_records_are_ignored() {
        assert!(parse(&[0u8; 8]).is_none());
        let r = record(7, 9);
        // SAFETY: viewing a POD value as bytes.
        let bytes =
            unsafe { std::slice::from_raw_parts((&r as *const SlowBracket).cast::<u8>(), size_of::<SlowBracket>()) };
        assert_eq!(parse(bytes), Some(r));
    }
}
