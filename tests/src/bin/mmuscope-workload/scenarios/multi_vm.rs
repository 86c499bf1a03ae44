//! `multi-vm --iterations N --vms K`: K VMs on one mm, each with a memslot over the same 2 MiB of guest memory;
//! every page written once, then N × (MADV_DONTNEED one page, write it again) as in `kvm-madvise`.
//!
//! Each DONTNEED is one bracket (`MMU_NOTIFY_CLEAR`; `madvise_dontneed_single_vma → zap_page_range_single(_batched)`),
//! whatever the number of subscribers: brackets = N in fentry/kprobe modes. `mn_hlist_invalidate_range_start` calls
//! every registered notifier's `invalidate_range_start`, and KVM's emits `kvm:kvm_unmap_hva_range` for its own VM
//! (6.1 virt/kvm/kvm_main.c:780, 6.12 :769): K × N events, which is what tracepoint mode counts.
//!
//! Secondary-TLB invalidations and doubles are those of `kvm-madvise` (same zap path, see there for the source
//! lines), counted per notification, not per subscriber: one `__mmu_notifier_invalidate_range` call, or one plain
//! `_end`, reaches every registered subscriber in the same `hlist_for_each_entry_rcu` loop (6.1
//! mm/mmu_notifier.c:560-578 and :613-620), so K VMs still make one bracket-context and one gather-context
//! invalidation per round on 6.1, and one `end_then_gather` of 4 KiB; one gather-context call per round on 6.12.

use anyhow::{Context, Result};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, GroundTruth, InvalidationTruth, MultiVmParams, NotifyEvent, ScenarioParams,
};

use super::kvm_madvise;
use crate::cgroups;
use crate::cli::MultiVmArgs;
use crate::kernel_api;
use crate::region::{AnonRegion, Thp};
use crate::subscriber;
use crate::thp::PMD_BYTES;
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "multi-vm";

pub fn run(args: &MultiVmArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
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

    let invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(
            NotifyEvent::Clear,
            args.iterations,
            args.vms,
            "madvise(MADV_DONTNEED) of one present page, with several VMs on the mm",
            "madvise_dontneed_single_vma → zap_page_range_single(_batched) → mmu_notifier_invalidate_range_start \
         (MMU_NOTIFY_CLEAR): one bracket; mn_hlist_invalidate_range_start → kvm_mmu_notifier_invalidate_range_start \
         once per VM (trace_kvm_unmap_hva_range: 6.1 virt/kvm/kvm_main.c:780, 6.12 :769)",
        )
        .with_causes(Cause::Madvise, None),
    ]);
    let params = MultiVmParams { iterations: args.iterations, vms: args.vms, region_bytes, page_bytes };
    let mut truth = GroundTruth::new(ScenarioParams::MultiVm(params), cgroups, args.vms, invalidations);
    truth.kernel_api = kernel_api;
    truth.double_notifications = Some(kvm_madvise::doubles(args.iterations, page_bytes));
    truth.secondary_tlb = Some(subscriber::kvm_only(kvm_madvise::secondary_tlb(args.iterations, page_bytes)));
    Ok(truth)
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
