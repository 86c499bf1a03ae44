//! `thp-partial-munmap`: N PMD-mapped THPs (2 MiB-aligned, isolated, `MADV_HUGEPAGE`, one write fault each,
//! verified through `AnonHugePages`) are built before the VM; with the VM registered, each loses its upper 1 MiB to
//! one munmap. Every munmap opens two brackets on the same mm, the first covering the second:
//!
//! 1. `MMU_NOTIFY_CLEAR [A, A+2M)`: the munmap starts inside the VMA, so it splits it at A+1M first, and the split
//!    splits the huge PMD straddling the new boundary. 6.1: `do_mas_align_munmap` (`start > vma->vm_start`,
//!    mm/mmap.c:2474) `→ __split_vma → vma_adjust(vma, vma->vm_start, addr)` (:2400) `→ __vma_adjust →
//!    vma_adjust_trans_huge` (:735) `→ split_huge_pmd_if_needed(vma, A+1M)` (mm/huge_memory.c:2372) `→
//!    split_huge_pmd_address → __split_huge_pmd` (:2312), closed with `mmu_notifier_invalidate_range_only_end`
//!    (:2358). 6.12: `vms_gather_munmap_vmas` (mm/vma.c:1210) `→ __split_vma → vma_adjust_trans_huge(vma,
//!    vma->vm_start, addr, 0)` (:427) `→ split_huge_pmd_if_needed` (mm/huge_memory.c:2991) `→ __split_huge_pmd`
//!    (:2964), closed with a plain `mmu_notifier_invalidate_range_end` (:2977).
//! 2. `MMU_NOTIFY_UNMAP [A+1M, A+2M)` from `unmap_vmas`, as in `kvm-munmap`; the PMD is a page table by then.
//!
//! Double notifications (kernel.md §3.3): the UNMAP range lies inside the CLEAR range of the same operation, so
//! each munmap is one `overlapping_brackets` double with 1 MiB redundant, on both generations. On pre-6.6 kernels
//! (KVM x86 implements `->invalidate_range` there, virt/kvm/kvm_main.c:918):
//! * the split's `_only_end` is one `avoided_only_end` (6.6 removed `_only_end`: none there);
//! * no `end_after_in_lock`: neither bracket calls `->invalidate_range` under the lock (the anonymous split uses
//!   `pmdp_invalidate`, the zap defers its flush to the mmu_gather);
//! * one `end_then_gather` of 1 MiB: `unmap_region`'s plain `_end` calls `->invalidate_range [A+1M, A+2M)`, then
//!   `tlb_finish_mmu → tlb_flush_mmu_tlbonly` (include/asm-generic/tlb.h) invalidates the gathered range again —
//!   exactly the zapped PTEs, since the page table stays (the lower half still uses it).
//!
//! `kvm:kvm_unmap_hva_range` fires twice per munmap: once per bracket for the one VM.
//!
//! Secondary-TLB invalidations per munmap:
//! * pre-6.6: none inside the split bracket (`pmdp_invalidate → flush_pmd_tlb_range` calls no notifier before
//!   6.6, and `_only_end` skips the repeat, 6.1 mm/huge_memory.c:2177, :2358); the unmap bracket's plain `_end`
//!   repeat over `[A+1M, A+2M)` (bracket context, range) and `tlb_flush_mmu_tlbonly` over the same 256 zapped PTEs
//!   (gather context, range; include/asm-generic/tlb.h:447);
//! * 6.6+: one inside the split bracket, from `pmdp_invalidate → flush_pmd_tlb_range → flush_tlb_mm_range`
//!   (6.12 mm/huge_memory.c:2820, mm/pgtable-generic.c:203, arch/x86/mm/tlb.c:1083) — its scope depends on the
//!   stride x86 flushes a PMD range with (PMD stride: one entry, a range; page stride: 512 entries > 33, `(0, ~0)`),
//!   so the truth gives the count only; then the unmap's gather flush of 256 PTEs at page stride, one call in the
//!   gather context, again without a scope: 256 > `tlb_single_page_flush_ceiling` (33, arch/x86/mm/tlb.c:998) makes
//!   it `(0, ~0)` on 6.12 (:1054-1058), while 7.2 passes the notifier the original range (tlb.c:1402-1405, :1462). The two calls are in different windows, and KVM implements no `arch_invalidate_secondary_tlbs`:
//!   no `overlapping_secondary_tlb`.

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth, NotifyEvent,
    ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, ThpPartialMunmapParams, TlbContext,
    TlbScope,
};

use crate::cgroups;
use crate::cli::ThpPartialMunmapArgs;
use crate::kernel_api;
use crate::region::{AnonRegion, Thp};
use crate::subscriber::{self, Subscribed};
use crate::thp::{self, PMD_BYTES};

pub const NAME: &str = "thp-partial-munmap";
const HALF: usize = PMD_BYTES / 2;

pub fn run(args: &ThpPartialMunmapArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let n = args.iterations;
    // Declared before the guest, so on an early return the VM goes first (locals drop in reverse order).
    let mut thps = Vec::with_capacity(n as usize);
    for i in 0..n {
        thps.push(thp::pmd_mapped_region().with_context(|| format!("THP {i}"))?);
    }
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    let guest = Subscribed::over(&args.subscriber, memory)?;
    let vms = guest.vms();
    // --- notifier registered: no allocation, free, print or other mapping change until teardown ---
    let exercised = exercise(&mut thps);
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.context("munmap of a THP's upper half")?;
    let received = teardown?;
    // Every THP must be split (AnonHugePages 0 after), so the split brackets below are measured, not assumed.
    for t in &thps {
        let kib = thp::pmd_mapped_kib(t.addr())?;
        if kib != 0 {
            bail!("the THP at {:#x} is still PMD-mapped ({kib} kB) after munmap of its upper half", t.addr());
        }
    }
    drop(thps);
    eprintln!(
        "mmuscope-workload: {NAME}: {n} THPs half-unmapped and split, subscriber gone (kernel API {kernel_api:?})"
    );

    let invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(
            NotifyEvent::Clear,
            n,
            vms,
            "THP split [A, A+2M) when munmap splits the VMA at A+1M",
            "6.1: do_mas_align_munmap → __split_vma → __vma_adjust → vma_adjust_trans_huge (mm/mmap.c:735) → \
             split_huge_pmd_if_needed → __split_huge_pmd (mm/huge_memory.c:2312-2322, MMU_NOTIFY_CLEAR); 6.12: \
             vms_gather_munmap_vmas → __split_vma → vma_adjust_trans_huge (mm/vma.c:427) → __split_huge_pmd \
             (mm/huge_memory.c:2964-2973)",
        )
        .with_causes(Cause::Munmap, Some(Cause::ThpSplit)),
        BracketSource::new(
            NotifyEvent::Unmap,
            n,
            vms,
            "munmap of the upper half [A+1M, A+2M) of a THP",
            "6.1: unmap_region → unmap_vmas (mm/memory.c:1724); 6.12: vms_clear_ptes → unmap_vmas \
             (mm/memory.c:1891); the PMD was already split, so no nested split",
        )
        .with_causes(Cause::Munmap, None),
    ]);
    let mut truth = GroundTruth::new(
        ScenarioParams::ThpPartialMunmap(ThpPartialMunmapParams {
            iterations: n,
            thp_bytes: PMD_BYTES as u64,
            unmapped_bytes: HALF as u64,
        }),
        cgroups,
        vms,
        invalidations,
    );
    truth.kernel_api = kernel_api;
    truth.double_notifications = Some(doubles(n));
    subscriber::finish(&mut truth, secondary_tlb(n), received)?;
    Ok(truth)
}

fn exercise(thps: &mut [AnonRegion]) -> std::io::Result<()> {
    for t in thps {
        t.unmap_tail(HALF)?;
    }
    Ok(())
}

/// Per generation and context, for `n` half-unmapped THPs (see the module docs).
fn secondary_tlb(n: u64) -> SecondaryTlbTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = |api, context, scope: Option<TlbScope>, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, context, scope, n, n * HALF as u64, cause, kernel_path)
    };
    SecondaryTlbTruth {
        sources: vec![
            src(
                Old,
                TlbContext::Bracket,
                Some(TlbScope::Range),
                "the unmap bracket's plain _end repeat over the upper half (the split's _only_end has none)",
                "6.1 mm/mmu_notifier.c:575; mm/huge_memory.c:2358",
            ),
            src(
                Old,
                TlbContext::Gather,
                Some(TlbScope::Range),
                "unmap_region's gather flush of the 256 zapped PTEs",
                "6.1 include/asm-generic/tlb.h:447",
            ),
            src(
                New,
                TlbContext::Bracket,
                None,
                "the split's pmdp_invalidate flushes the PMD range",
                "6.12 mm/huge_memory.c:2820 → mm/pgtable-generic.c:203 → arch/x86/mm/tlb.c:1083",
            ),
            src(
                New,
                TlbContext::Gather,
                None,
                "the unmap's gather flush of 256 PTEs: (0, ~0) on 6.12, the range on 7.2",
                "6.12 arch/x86/mm/tlb.c:998, :1054-1058, :1083; 7.2 tlb.c:1402-1405, :1462",
            ),
        ],
    }
}

fn doubles(n: u64) -> DoubleNotificationTruth {
    let src = DoubleSource::new;
    DoubleNotificationTruth {
        sources: vec![
            src(
                DoubleKind::OverlappingBrackets,
                n,
                n * HALF as u64,
                None,
                "UNMAP [A+1M, A+2M) inside the split's CLEAR [A, A+2M), same munmap",
                "split bracket (__split_huge_pmd) then unmap_vmas bracket in one munmap syscall",
            ),
            src(
                DoubleKind::EndAfterInLock,
                0,
                0,
                None,
                "no ->invalidate_range under the page-table lock in either bracket",
                "6.1 __split_huge_pmd_locked: pmdp_invalidate for anonymous THPs; zap_pte_range defers to the gather",
            ),
            src(
                DoubleKind::EndThenGather,
                n,
                n * HALF as u64,
                Some(SecondaryTlbApi::InvalidateRange),
                "unmap bracket's _end invalidates [A+1M, A+2M), then the gather flush does it again",
                "6.1 unmap_region: unmap_vmas' plain _end (mm/mmu_notifier.c:575 !only_end → ->invalidate_range), then \
                 tlb_finish_mmu → tlb_flush_mmu_tlbonly → mmu_notifier_invalidate_range (include/asm-generic/tlb.h:447)",
            ),
            src(
                DoubleKind::EndThenGather,
                0,
                0,
                Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs),
                "_end calls no secondary-TLB callback on 6.6+",
                "6.12 mn_hlist_invalidate_end calls only invalidate_range_end",
            ),
            src(
                DoubleKind::AvoidedOnlyEnd,
                n,
                0,
                Some(SecondaryTlbApi::InvalidateRange),
                "the split bracket ends with mmu_notifier_invalidate_range_only_end",
                "6.1 mm/huge_memory.c:2358 (__split_huge_pmd)",
            ),
            src(
                DoubleKind::AvoidedOnlyEnd,
                0,
                0,
                Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs),
                "no _only_end on 6.6+",
                "6.12 mm/huge_memory.c:2977: plain mmu_notifier_invalidate_range_end",
            ),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs),
                "one call per window (the split's bracket, the unmap's gather): nothing to overlap (and with KVM the \
                 calls reach no implementer)",
                "see the secondary-TLB sources; KVM's mmu_notifier_ops 6.12 virt/kvm/kvm_main.c:917",
            ),
        ],
    }
}
