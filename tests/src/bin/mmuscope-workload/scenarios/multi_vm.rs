//! `multi-vm --iterations N --vms K`: K VMs on one mm, each with a memslot over the same 2 MiB of guest memory;
//! every page written once, then N × (MADV_DONTNEED one page, write it again) as in `kvm-madvise`.
//!
//! Each DONTNEED is one bracket (`MMU_NOTIFY_CLEAR`; `madvise_dontneed_single_vma → zap_page_range_single(_batched)`),
//! whatever the number of subscribers: brackets = N in fentry/kprobe modes. `mn_hlist_invalidate_range_start` calls
//! every registered notifier's `invalidate_range_start`, and KVM's emits `kvm:kvm_unmap_hva_range` for its own VM
//! (6.1 virt/kvm/kvm_main.c:780, 6.12 :769): K × N events, which is what tracepoint mode counts.

use anyhow::{Context, Result};
use mmuscope_tests::truth::{
    BracketSource, GroundTruth, InvalidationTruth, MultiVmParams, NotifyEvent, ScenarioParams,
};

use crate::cgroups;
use crate::cli::MultiVmArgs;
use crate::region::{AnonRegion, Thp};
use crate::thp::PMD_BYTES;
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "multi-vm";

pub fn run(args: &MultiVmArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kvm = Kvm::open()?;
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    memory.touch_all();
    let (region_bytes, page_bytes) = (memory.len() as u64, memory.page_size() as u64);
    let guest = GuestVm::over(&kvm, memory, args.vms)?;
    // --- KVM notifiers registered: no allocation, free, print or mapping change until teardown ---
    let exercised = exercise(&guest.memory, args.iterations);
    crate::hold::until_stdin_closes(args.hold);
    let teardown = guest.teardown();
    // --- notifiers gone ---
    exercised.context("madvise(MADV_DONTNEED)")?;
    teardown?;
    eprintln!(
        "mmuscope-workload: {NAME}: {} DONTNEED rounds with {} VMs done, VMs destroyed",
        args.iterations, args.vms
    );

    let invalidations = InvalidationTruth::from_sources(vec![BracketSource::new(
        NotifyEvent::Clear,
        args.iterations,
        args.vms,
        "madvise(MADV_DONTNEED) of one present page, with several VMs on the mm",
        "madvise_dontneed_single_vma → zap_page_range_single(_batched) → mmu_notifier_invalidate_range_start \
         (MMU_NOTIFY_CLEAR): one bracket; mn_hlist_invalidate_range_start → kvm_mmu_notifier_invalidate_range_start \
         once per VM (trace_kvm_unmap_hva_range: 6.1 virt/kvm/kvm_main.c:780, 6.12 :769)",
    )]);
    let params = MultiVmParams { iterations: args.iterations, vms: args.vms, region_bytes, page_bytes };
    Ok(GroundTruth::new(ScenarioParams::MultiVm(params), cgroups, args.vms, invalidations))
}

/// N × (DONTNEED page i, write it again), round-robin over the pages.
fn exercise(memory: &AnonRegion, iterations: u64) -> std::io::Result<()> {
    let pages = memory.pages() as u64;
    for i in 0..iterations {
        let p = (i % pages) as usize;
        memory.dontneed(p)?;
        memory.touch(p);
    }
    Ok(())
}
