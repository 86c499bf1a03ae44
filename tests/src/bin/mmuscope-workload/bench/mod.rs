//! Benchmark modes for `cargo xtask bench`: kernel paths timed inside the process with `CLOCK_MONOTONIC` and
//! `CLOCK_PROCESS_CPUTIME_ID` around the measured loop only (set-up and teardown excluded). They print one JSON object
//! of timings, not ground truth, and enter no cgroup of their own (the caller places and pins the process).
//!
//! `madvise` and `fork` measure processes the agent observes (a KVM notifier, pinned pages); `unrelated` measures
//! processes with neither, which the agent must not slow down.

pub mod fork;
pub mod madvise;
pub mod unrelated;

use std::ops::AddAssign;
use std::time::Instant;

/// Time spent on both clocks, in ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Elapsed {
    pub wall_ns: f64,
    /// CPU time of this process (user + system, all threads): unlike wall time it does not count the time other jobs
    /// on a shared machine hold the CPU, while the eBPF programs, which run in this process's context, are in it.
    pub cpu_ns: f64,
}

impl AddAssign for Elapsed {
    fn add_assign(&mut self, other: Self) {
        self.wall_ns += other.wall_ns;
        self.cpu_ns += other.cpu_ns;
    }
}

/// A start on both clocks.
pub struct Stopwatch {
    wall: Instant,
    cpu_ns: f64,
}

impl Stopwatch {
    pub fn start() -> Self {
        Self { cpu_ns: process_cpu_ns(), wall: Instant::now() }
    }

    pub fn elapsed(&self) -> Elapsed {
        let wall_ns = self.wall.elapsed().as_nanos() as f64;
        Elapsed { wall_ns, cpu_ns: process_cpu_ns() - self.cpu_ns }
    }
}

/// The common fields of a timed loop's JSON: `ns_per_op` (wall) and `cpu_ns_per_op` over `iterations`.
fn per_op(bench: &str, iterations: u64, t: Elapsed) -> serde_json::Value {
    serde_json::json!({
        "bench": bench,
        "iterations": iterations,
        "elapsed_ns": t.wall_ns,
        "ns_per_op": t.wall_ns / iterations as f64,
        "cpu_ns_per_op": t.cpu_ns / iterations as f64,
    })
}

/// CPU time this process has used so far, in ns.
fn process_cpu_ns() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec at the pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}
