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
//! Verified in every vm-tier run by the guest check's kernel references (`reference/`): KVM's start callback ran
//! N times, and the traced brackets on the subscribed mm are N `clear`, with the secondary-TLB calls placed as below.
//!
//! Secondary-TLB invalidations and doubles, per generation (the bracket sits inside a TLB-gather window:
//! `zap_page_range_single` does `tlb_gather_mmu`, `_start`, `unmap_single_vma`, `_end`, `tlb_finish_mmu`, 6.1
//! mm/memory.c:1786-1795, 6.12 :1926-1935). The zap of one present anonymous page only records it in the gather
//! (`zap_pte_range` flushes early only when the batch is full or a dirty shared page needs it), so nothing is
//! invalidated inside the bracket except by `_end` itself; `tlb_finish_mmu → tlb_flush_mmu → tlb_flush_mmu_tlbonly`
//! flushes `[addr, addr+4K)` once the page was cleared (`cleared_ptes`):
//! * pre-6.6: the plain `_end` calls `->invalidate_range [addr, addr+4K)` for KVM (6.1 mm/mmu_notifier.c:575-576,
//!   KVM x86 implements it, virt/kvm/kvm_main.c:918) — one in the bracket's context — then
//!   `tlb_flush_mmu_tlbonly` calls `mmu_notifier_invalidate_range(tlb->mm, tlb->start, tlb->end)` (6.1
//!   include/asm-generic/tlb.h:447) — one in the gather context over the same 4 KiB: one `end_then_gather` double
//!   with 4 KiB redundant per round;
//! * 6.6+: `_end` calls no secondary-TLB callback; `tlb_flush_mmu_tlbonly → tlb_flush` (6.12 include/asm-generic/
//!   tlb.h:481, arch/x86/include/asm/tlb.h) `→ flush_tlb_mm_range(mm, addr, addr+4K)` ends with
//!   `mmu_notifier_arch_invalidate_secondary_tlbs(mm, start, end)` (arch/x86/mm/tlb.c:1083): one range call in the
//!   gather context per round, none in the bracket; KVM implements no `arch_invalidate_secondary_tlbs` (6.12
//!   virt/kvm/kvm_main.c:917), so no double of any kind.

use anyhow::{Context, Result};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, IntervalRange, IntervalTruth,
    InvalidationTruth, KvmMadviseParams, NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource,
    SecondaryTlbTruth, SubscriberSplitTruth, TlbContext, TlbScope,
};

use crate::cgroups;
use crate::cli::KvmMadviseArgs;
use crate::kernel_api;
use crate::region::AnonRegion;
use crate::subscriber::{self, Subscribed};

pub const NAME: &str = "kvm-madvise";
/// Guest memory size: small enough to touch quickly, large enough to spread the DONTNEEDs over 512 pages.
const REGION_BYTES: usize = 2 << 20;

pub fn run(args: &KvmMadviseArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let memory = AnonRegion::map(REGION_BYTES).context("mapping guest memory")?;
    let mut guest = Subscribed::over(&args.subscriber, memory)?;
    if args.interval_pages > 0 {
        guest.add_intervals(&args.subscriber.module, args.interval_pages, args.intervals)?;
    }
    let vms = guest.vms();
    let (region_bytes, page_bytes) = (guest.memory().len() as u64, guest.memory().page_size() as u64);
    let pages = guest.memory().pages();
    // --- notifier registered: no allocation, free, print or mapping change until teardown ---
    let exercised = exercise(guest.memory(), args.iterations);
    crate::hold::until_stdin_closes(args.hold);
    let interval = guest.interval_status();
    let intervals = guest.intervals();
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.context("madvise(MADV_DONTNEED)")?;
    let received = teardown?;
    eprintln!("mmuscope-workload: {NAME}: {} DONTNEED rounds done, subscriber gone", args.iterations);

    let invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(
            NotifyEvent::Clear,
            args.iterations,
            vms,
            "madvise(MADV_DONTNEED) of one present page",
            "madvise_dontneed_single_vma → zap_page_range_single_batched → \
         mmu_notifier_invalidate_range_start(MMU_NOTIFY_CLEAR)",
        )
        .with_causes(Cause::Madvise, None),
    ]);
    let interval_pages = args.interval_pages as u64;
    let params = KvmMadviseParams { iterations: args.iterations, region_bytes, page_bytes, interval_pages };
    let mut truth = GroundTruth::new(ScenarioParams::KvmMadvise(params), cgroups, vms, invalidations);
    truth.kernel_api = kernel_api;
    truth.double_notifications = Some(doubles(args.iterations, page_bytes));
    if let Some(status) = interval {
        split_by_subscriber(&mut truth, status?, args.iterations, pages, args.interval_pages, intervals)?;
    }
    subscriber::finish(&mut truth, secondary_tlb(args.iterations, page_bytes), received)?;
    Ok(truth)
}

/// With `--interval-pages K`: the test module's interval notifiers (`--intervals`, consecutive) cover pages `[0, K)`
/// beside the VM. Round `i` zaps page `i % pages` (`exercise`), so the rounds on pages below `K` reach KVM and one
/// interval (`kvm+mmuscope_mirror`), the others KVM alone (`kvm`); the module's own count of `ops->invalidate`
/// calls, summed over the notifiers, must equal the first figure. Nothing else touches the interval (no fault, no read), and the interval notifier has no
/// secondary-TLB op: every double is KVM's, and no reader waits or collides.
fn split_by_subscriber(
    truth: &mut GroundTruth,
    status: crate::mirror::Status,
    rounds: u64,
    pages: usize,
    interval_pages: usize,
    notifiers: Vec<IntervalRange>,
) -> Result<()> {
    let both = (0..rounds).filter(|i| (i % pages as u64) < interval_pages as u64).count() as u64;
    anyhow::ensure!(
        status.invalidations == both,
        "the module's interval notifier was invalidated {} times, the rounds on its pages were {both}",
        status.invalidations
    );
    let kvm = mmuscope_tests::truth::KVM_KIND;
    let joined = format!("{kvm}+{}", mmuscope_tests::truth::MIRROR_KIND);
    let brackets = [(kvm.to_owned(), rounds - both), (joined, both)].into_iter().collect();
    truth.subscribers = Some(SubscriberSplitTruth { brackets, doubles: kvm.to_owned() });
    truth.interval = Some(IntervalTruth {
        invalidations: both,
        misses: 0,
        concurrent_misses: 0,
        read_waits: 0,
        read_retries: 0,
        hmm_busy: 0,
        collisions_timed: false,
        read_collisions: Some(0),
        kernel_path: "madvise_dontneed_single_vma → mmu_notifier_invalidate_range_start → mn_itree_invalidate \
                      (the interval tree's ranges intersecting the zapped page)"
            .to_owned(),
        notifiers,
    });
    Ok(())
}

/// `rounds` zaps of one present page of `page` bytes (see the module docs for the source lines).
pub fn doubles(rounds: u64, page: u64) -> DoubleNotificationTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = DoubleSource::new;
    DoubleNotificationTruth {
        sources: vec![
            src(
                DoubleKind::EndThenGather,
                rounds,
                rounds * page,
                Some(Old),
                "the zap bracket's plain _end invalidates the page, then the gather flush does it again",
                "6.1 zap_page_range_single (mm/memory.c:1794-1795): _end → mn_hlist_invalidate_end !only_end → \
                 ->invalidate_range (mm/mmu_notifier.c:575-576), then tlb_finish_mmu → tlb_flush_mmu_tlbonly → \
                 mmu_notifier_invalidate_range (include/asm-generic/tlb.h:447)",
            ),
            src(DoubleKind::EndAfterInLock, 0, 0, None, "no in-lock call", "zap_pte_range defers to the gather"),
            src(DoubleKind::EndThenGather, 0, 0, Some(New), "no _end callback on 6.6+", "mn_hlist_invalidate_end"),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(New),
                "one secondary-TLB call per gather window and none in the bracket: nothing to overlap (and with KVM \
                 the call reaches no implementer)",
                "the gather flush (see the secondary-TLB sources); KVM's mmu_notifier_ops 6.12 virt/kvm/kvm_main.c:917",
            ),
            src(DoubleKind::OverlappingBrackets, 0, 0, None, "one bracket per madvise", "zap_page_range_single"),
        ],
    }
}

/// Secondary-TLB invalidations of `rounds` one-page zaps, per generation and context.
pub fn secondary_tlb(rounds: u64, page: u64) -> SecondaryTlbTruth {
    let src = |api, context, count: u64, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, context, Some(TlbScope::Range), count, count * page, cause, kernel_path)
    };
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    SecondaryTlbTruth {
        sources: vec![
            src(
                Old,
                TlbContext::Bracket,
                rounds,
                "the bracket's plain _end calls ->invalidate_range over the page",
                "6.1 mm/mmu_notifier.c:575-576",
            ),
            src(
                Old,
                TlbContext::Gather,
                rounds,
                "tlb_finish_mmu flushes the gathered page",
                "6.1 include/asm-generic/tlb.h:447 mmu_notifier_invalidate_range(tlb->mm, tlb->start, tlb->end)",
            ),
            src(New, TlbContext::Bracket, 0, "the zap only gathers; _end has no secondary callback", "zap_pte_range"),
            src(
                New,
                TlbContext::Gather,
                rounds,
                "tlb_finish_mmu flushes the gathered page through flush_tlb_mm_range",
                "6.12 include/asm-generic/tlb.h:481 tlb_flush → arch/x86/mm/tlb.c:1083",
            ),
        ],
    }
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
