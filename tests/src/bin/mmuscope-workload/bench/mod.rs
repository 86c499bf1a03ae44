//! Benchmark modes for `cargo xtask bench`: the same kernel paths as the scenarios, timed inside the process with
//! `CLOCK_MONOTONIC` (and, for the madvise loop, `CLOCK_PROCESS_CPUTIME_ID`) around the measured loop only (set-up and teardown excluded). They print one JSON object of
//! timings, not ground truth, and enter no cgroup of their own (the caller places and pins the process).

pub mod fork;
pub mod madvise;

use std::time::Instant;

/// Nanoseconds since `start`, as f64.
fn elapsed_ns(start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64
}

/// CPU time this process has used so far (user + system, all threads), in ns: unlike wall time it does not count
/// the time other jobs on a shared machine hold the CPU, while the eBPF programs, which run in this process's
/// context, are in it.
fn process_cpu_ns() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec at the pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}
