//! `kvm-munmap`: one VM; N × (mmap 16 KiB at a fixed address inside a reserved hole, write its pages, munmap it).
//!
//! Each munmap of the whole mapping is exactly one bracket with event `MMU_NOTIFY_UNMAP`:
//! * 6.1: `__vm_munmap → do_mas_munmap → do_mas_align_munmap → unmap_region` (mm/mmap.c:2338) `→ unmap_vmas`
//!   (:2348) `→ mmu_notifier_range_init(MMU_NOTIFY_UNMAP, …, start, end)` (mm/memory.c:1724);
//! * 6.12: `do_vmi_align_munmap → vms_complete_munmap_vmas → vms_clear_ptes` (mm/vma.c:1099; `clear_ptes` is set
//!   for any gathered VMA, :1325) `→ unmap_vmas` (:1115) `→ MMU_NOTIFY_UNMAP` (mm/memory.c:1891).
//!
//! What does not matter, and why:
//! * touched or not: `unmap_vmas` opens the bracket before walking the page tables, whatever they hold
//!   (`--untouched` shows it; verified on 6.18);
//! * `free_pgtables` (same mmu_gather, after `unmap_vmas`) opens no bracket in either version;
//! * the mmap: `MAP_FIXED_NOREPLACE` into a hole never overlaps an existing VMA, so `mmap_region` unmaps nothing.
//!
//! Double notifications (pre-6.6 only; KVM x86 implements `->invalidate_range` there, virt/kvm/kvm_main.c:918):
//! each munmap of written pages is one `end_then_gather` of 16 KiB — `unmap_vmas`' plain `_end` calls
//! `->invalidate_range [A, A+16K)` (mm/mmu_notifier.c:575), then `tlb_finish_mmu → tlb_flush_mmu_tlbonly`
//! (include/asm-generic/tlb.h:447) invalidates the gathered range again, which covers the zapped PTEs and the freed
//! page table. Without written pages nothing was gathered (no PTE, no page table), so `tlb_flush_mmu_tlbonly`
//! returns early: none. No `end_after_in_lock` (the zap calls nothing under the lock). On 6.6+ `_end` calls no
//! secondary-TLB callback and KVM implements no `arch_invalidate_secondary_tlbs`: no doubles of any kind.
//!
//! Secondary-TLB invalidations, per munmap (`unmap_region` 6.1 mm/mmap.c:2346-2351, `vms_clear_ptes` 6.12
//! mm/vma.c:1113-1122: `tlb_gather_mmu`, `unmap_vmas`, `free_pgtables`, `tlb_finish_mmu`):
//! * 6.1: the plain `_end` repeat, `[A, A+16K)`, in the bracket's context, touched or not (mm/mmu_notifier.c:575);
//!   with written pages one more from `tlb_flush_mmu_tlbonly` in the gather context (include/asm-generic/tlb.h:447),
//!   none without (nothing cleared, :442-444);
//! * 6.12: nothing in the bracket (the zap of 4 anonymous pages never forces an early flush); with written pages one
//!   `flush_tlb_mm_range` in the gather context (arch/x86/mm/tlb.c:1083). Its scope depends on the layout:
//!   `free_pgtables` may free the page table and widen the gathered range to the PMD/PUD boundary
//!   (`pte_free_tlb`/`pmd_free_tlb`), and a range over 33 pages becomes `(0, ~0)` (tlb.c:1054-1058). So the truth
//!   gives the gather count without a scope.
//!
//! What would matter, and is avoided: munmap of part of a larger VMA splits it, and a split at an address that is
//! not 2 MiB aligned inside a VMA spanning that 2 MiB range opens an extra `MMU_NOTIFY_CLEAR` bracket
//! (`vma_adjust_trans_huge` → `__split_huge_pmd`, even without a huge page; see `region.rs`). The hole has at least
//! 2 MiB of free space on both sides, so the mapping is always a VMA of its own (no merge with a neighbour) and the
//! munmap always removes exactly that VMA.

use anyhow::{Context, Result};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth, KvmMunmapParams,
    NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, TlbContext, TlbScope,
};

use crate::cgroups;
use crate::cli::KvmMunmapArgs;
use crate::kernel_api;
use crate::region::{AnonRegion, Thp, page_size, reserve_hole};
use crate::subscriber::{self, Subscribed};
use crate::thp::PMD_BYTES;

pub const NAME: &str = "kvm-munmap";
const MAPPING_PAGES: usize = 4;

pub fn run(args: &KvmMunmapArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let page = page_size()?;
    let mapping_bytes = MAPPING_PAGES * page;
    // Guest memory first, then the hole: the hole is then not where the guest memory went.
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    let hole = reserve_hole(mapping_bytes, PMD_BYTES).context("reserving an address-space hole")?;
    let touch = !args.untouched;
    let guest = Subscribed::over(&args.subscriber, memory)?;
    let vms = guest.vms();
    // --- notifier registered: no allocation, free, print or other mapping change until teardown ---
    let exercised = exercise(hole, mapping_bytes, args.iterations, touch);
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.with_context(|| format!("mmap/munmap at {hole:#x}"))?;
    let received = teardown?;
    eprintln!("mmuscope-workload: {NAME}: {} mmap+munmap rounds at {hole:#x} done, subscriber gone", args.iterations);

    let cause = format!(
        "munmap of a whole {mapping_bytes}-byte mapping ({})",
        if touch { "every page written" } else { "no page ever touched" }
    );
    let invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(
            NotifyEvent::Unmap,
            args.iterations,
            vms,
            &cause,
            "6.1: do_mas_align_munmap → unmap_region (mm/mmap.c:2338) → unmap_vmas (mm/memory.c:1724 \
         MMU_NOTIFY_UNMAP); 6.12: do_vmi_align_munmap → vms_complete_munmap_vmas → vms_clear_ptes (mm/vma.c:1099) \
         → unmap_vmas (mm/memory.c:1891). One bracket per munmap, before the page walk; free_pgtables adds none; \
         the mapping is a whole isolated VMA, so no split bracket",
        )
        .with_causes(Cause::Munmap, None),
    ]);
    let params = KvmMunmapParams {
        iterations: args.iterations,
        mapping_bytes: mapping_bytes as u64,
        page_bytes: page as u64,
        touched: touch,
    };
    let mut truth = GroundTruth::new(ScenarioParams::KvmMunmap(params), cgroups, vms, invalidations);
    truth.kernel_api = kernel_api;
    let gathered = if touch { args.iterations } else { 0 };
    truth.double_notifications = Some(doubles(gathered, mapping_bytes as u64));
    subscriber::finish(&mut truth, secondary_tlb(args.iterations, gathered, mapping_bytes as u64), received)?;
    Ok(truth)
}

/// `munmaps` brackets over `bytes` each, `gathered` of which left TLB work in the mmu_gather.
fn secondary_tlb(munmaps: u64, gathered: u64, bytes: u64) -> SecondaryTlbTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = |api, context, scope: Option<TlbScope>, count: u64, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, context, scope, count, count * bytes, cause, kernel_path)
    };
    SecondaryTlbTruth {
        sources: vec![
            src(
                Old,
                TlbContext::Bracket,
                Some(TlbScope::Range),
                munmaps,
                "unmap_vmas' plain _end calls ->invalidate_range over the mapping",
                "6.1 mm/mmu_notifier.c:575",
            ),
            src(
                Old,
                TlbContext::Gather,
                Some(TlbScope::Range),
                gathered,
                "tlb_finish_mmu flushes what unmap_vmas and free_pgtables gathered",
                "6.1 mm/mmap.c:2351 → include/asm-generic/tlb.h:447",
            ),
            src(New, TlbContext::Bracket, None, 0, "the zap only gathers", "zap_pte_range"),
            src(
                New,
                TlbContext::Gather,
                None,
                gathered,
                "tlb_finish_mmu → flush_tlb_mm_range, range or (0, ~0) depending on the page tables freed",
                "6.12 mm/vma.c:1122 → arch/x86/mm/tlb.c:1054-1058, :1083",
            ),
        ],
    }
}

/// `gathered` munmaps left TLB work in the mmu_gather (written pages), each over `bytes`.
fn doubles(gathered: u64, bytes: u64) -> DoubleNotificationTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = DoubleSource::new;
    DoubleNotificationTruth {
        sources: vec![
            src(
                DoubleKind::EndThenGather,
                gathered,
                gathered * bytes,
                Some(Old),
                "unmap bracket's _end invalidates the mapping, then unmap_region's gather flush does it again",
                "6.1 unmap_vmas plain _end (mm/mmu_notifier.c:575) then tlb_finish_mmu → tlb_flush_mmu_tlbonly \
                 (include/asm-generic/tlb.h:447); nothing gathered without written pages",
            ),
            src(DoubleKind::EndAfterInLock, 0, 0, None, "no in-lock call", "zap_pte_range defers to the gather"),
            src(DoubleKind::EndThenGather, 0, 0, Some(New), "no _end callback on 6.6+", "mn_hlist_invalidate_end"),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(New),
                "one secondary-TLB call per munmap, from its gather flush, none in the bracket: nothing to overlap (and \
                 with KVM the call reaches no implementer)",
                "the gather flush (see the secondary-TLB sources); KVM's mmu_notifier_ops 6.12 virt/kvm/kvm_main.c:917",
            ),
            src(DoubleKind::OverlappingBrackets, 0, 0, None, "one bracket per munmap", "unmap_vmas"),
        ],
    }
}

/// N × (map at `hole`, write every page if `touch`, unmap): one syscall pair and plain stores per round.
fn exercise(hole: u64, len: usize, iterations: u64, touch: bool) -> std::io::Result<()> {
    for _ in 0..iterations {
        let mapping = AnonRegion::map_at(hole, len)?;
        if touch {
            mapping.touch_all();
        }
        mapping.unmap()?;
    }
    Ok(())
}
