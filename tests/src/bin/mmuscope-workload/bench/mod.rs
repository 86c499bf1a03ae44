//! Benchmark modes for `cargo xtask bench`: the same kernel paths as the scenarios, timed inside the process with
//! `CLOCK_MONOTONIC` around the measured loop only (set-up and teardown excluded). They print one JSON object of
//! timings, not ground truth, and enter no cgroup of their own (the caller places and pins the process).

pub mod fork;
pub mod madvise;

use std::time::Instant;

/// Nanoseconds since `start`, as f64.
fn elapsed_ns(start: Instant) -> f64 {
    start.elapsed().as_nanos() as f64
}
