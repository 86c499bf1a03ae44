//! `bench-madvise --iterations N`: the `kvm-madvise` loop (MADV_DONTNEED one page of a KVM-registered 2 MiB region,
//! touch it again), timed. Each round is one invalidation bracket with one `kvm_unmap_hva_range` event, and the touch
//! allocates one order-0 movable page (`mm_page_alloc`). Prints `{"bench":"madvise","iterations":N,"ns_per_op":…}`.

use anyhow::{Context, Result};

use super::{Elapsed, Stopwatch};
use crate::cli::BenchMadviseArgs;
use crate::region::AnonRegion;
use crate::vm::{GuestVm, Kvm};

/// The same guest memory as `kvm-madvise`.
const REGION_BYTES: usize = 2 << 20;

pub fn run(args: &BenchMadviseArgs) -> Result<serde_json::Value> {
    let kvm = Kvm::open()?;
    let guest = GuestVm::create(&kvm, REGION_BYTES)?;
    let (warmup, timed) =
        (timed_loop(&guest.memory, args.iterations / 10 + 1), timed_loop(&guest.memory, args.iterations));
    guest.teardown()?;
    warmup.context("madvise(MADV_DONTNEED) warm-up")?;
    Ok(super::per_op("madvise", args.iterations, timed.context("madvise(MADV_DONTNEED)")?))
}

/// Touches every page, then times N × (DONTNEED page p, touch page p), round-robin over the pages.
fn timed_loop(memory: &AnonRegion, iterations: u64) -> std::io::Result<Elapsed> {
    let pages = memory.pages();
    memory.touch_all();
    let clock = Stopwatch::start();
    for i in 0..iterations {
        let p = (i % pages as u64) as usize;
        memory.dontneed(p)?;
        memory.touch(p);
    }
    Ok(clock.elapsed())
}
