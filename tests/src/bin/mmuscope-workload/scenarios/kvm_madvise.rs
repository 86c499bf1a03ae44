//! `kvm-madvise`: one VM with a 2 MiB memslot; every page touched once, then N × (MADV_DONTNEED one page, touch it).
//!
//! Each `madvise(MADV_DONTNEED)` of one page is exactly one bracket with event `MMU_NOTIFY_CLEAR`:
//! `madvise_dontneed_single_vma → zap_page_range_single_batched → mmu_notifier_invalidate_range_start`. The bracket
//! is opened whether or not the page is present; the touch in between keeps it present, so the zap also has work.
//!
//! Nothing else invalidates this mm while the VM exists, by construction:
//! * the cgroup, `/dev/kvm` and the guest memory (mmap + MADV_NOHUGEPAGE) are set up before `KVM_CREATE_VM`, the
//!   truth is built after the VM is gone; the loop only issues madvise and plain stores (no allocation, free, print);
//! * touches are writes, so no zero-page COW (`wp_page_copy` would open a CLEAR bracket of its own);
//! * the VM fd is closed before the guest memory is unmapped (`GuestVm::teardown`): `kvm_destroy_vm` unregisters
//!   the notifier, so the munmap and all later frees, the stdout buffer, Rust's runtime clean-up (it munmaps the
//!   main thread's signal stack after `main`) and `exit_mmap` are invisible to KVM.
//!
//! Verified with bpftrace (`tests/scripts/verify-kvm-madvise.sh`): `kvm:kvm_unmap_hva_range` events of the workload's
//! pid = N exactly, all from `madvise`.

use anyhow::{Context, Result};
use mmuscope_tests::truth::{
    BracketSource, GroundTruth, InvalidationTruth, KvmMadviseParams, NotifyEvent, ScenarioParams,
};

use crate::cgroups;
use crate::cli::KvmMadviseArgs;
use crate::region::AnonRegion;
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "kvm-madvise";
/// Guest memory size: small enough to touch quickly, large enough to spread the DONTNEEDs over 512 pages.
const REGION_BYTES: usize = 2 << 20;

pub fn run(args: &KvmMadviseArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kvm = Kvm::open()?;
    let guest = GuestVm::create(&kvm, REGION_BYTES)?;
    let (region_bytes, page_bytes) = (guest.memory.len() as u64, guest.memory.page_size() as u64);
    // --- KVM notifier registered: no allocation, free, print or mapping change until teardown ---
    let exercised = exercise(&guest.memory, args.iterations);
    crate::hold::until_stdin_closes(args.hold);
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.context("madvise(MADV_DONTNEED)")?;
    teardown?;
    eprintln!("mmuscope-workload: {NAME}: {} DONTNEED rounds done, VM destroyed", args.iterations);

    let invalidations = InvalidationTruth::from_sources(vec![BracketSource::new(
        NotifyEvent::Clear,
        args.iterations,
        1,
        "madvise(MADV_DONTNEED) of one present page",
        "madvise_dontneed_single_vma → zap_page_range_single_batched → \
         mmu_notifier_invalidate_range_start(MMU_NOTIFY_CLEAR)",
    )]);
    let params = KvmMadviseParams { iterations: args.iterations, region_bytes, page_bytes };
    Ok(GroundTruth::new(ScenarioParams::KvmMadvise(params), cgroups, 1, invalidations))
}

/// Touches every page once (write faults, no brackets), then N × (DONTNEED one page: one CLEAR bracket; touch it
/// again so the next round's page is present). Walks the pages round-robin.
fn exercise(memory: &AnonRegion, iterations: u64) -> std::io::Result<()> {
    let pages = memory.pages();
    for p in 0..pages {
        memory.touch(p);
    }
    for i in 0..iterations {
        // `i % pages` fits in usize: pages is a usize.
        let p = (i % pages as u64) as usize;
        memory.dontneed(p)?;
        memory.touch(p);
    }
    Ok(())
}
