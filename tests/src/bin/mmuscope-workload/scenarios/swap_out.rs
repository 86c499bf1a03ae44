//! `swap-out --pages N [--zram-mib M]`: N written pages of KVM guest memory (`MADV_NOHUGEPAGE`, isolated) are
//! paged out with one `madvise(MADV_PAGEOUT)` while the VM exists. Needs an active swap area; without one it refuses,
//! unless `--zram-mib` lets it create a temporary zram swap device (removed afterwards).
//!
//! Path: `madvise_pageout` (`lru_add_drain()` first: 6.1 mm/madvise.c:586, 6.12 :642) `→
//! madvise_cold_or_pageout_pte_range` isolates every exclusively mapped LRU page `→ reclaim_pages →
//! shrink_folio_list` (`add_to_swap`, then `try_to_unmap(folio, TTU_BATCH_FLUSH)`: 6.1 mm/vmscan.c:1887, 6.12
//! :1326) `→ try_to_unmap_one`: one `MMU_NOTIFY_CLEAR` bracket per page over `[address, address + 4 KiB)`
//! (6.1 mm/rmap.c:1506, 6.12 :1673), in which the PTE becomes a swap entry.
//!
//! Where the generations differ (inside that bracket):
//! * pre-6.6 (`invalidate_range`): after `set_pte_at(swp_pte)`, under the page-table lock,
//!   `mmu_notifier_invalidate_range(mm, address, address + PAGE_SIZE)` (6.1 mm/rmap.c:1767) — one in-bracket
//!   secondary-TLB call — and the bracket then closes with a plain `mmu_notifier_invalidate_range_end` (:1797), which
//!   calls `->invalidate_range` over the same 4 KiB again. KVM x86 implements `->invalidate_range` on 6.1
//!   (`kvm_mmu_notifier_invalidate_range`, virt/kvm/kvm_main.c:918), so each page is two secondary-TLB
//!   invalidations in its bracket and one `end_after_in_lock` double with 4 KiB redundant.
//! * 6.6+ (`arch_invalidate_secondary_tlbs`): no in-lock call; the PTE clear calls it from the x86 flush instead:
//!   either `set_tlb_ubc_flush_pending → arch_tlbbatch_add_pending → (mm, 0, ~0)` (6.12 mm/rmap.c:1805,
//!   arch/x86/include/asm/tlbflush.h:287) or `ptep_clear_flush → flush_tlb_mm_range → (mm, addr, addr + 4K)`
//!   (mm/rmap.c:1807, arch/x86/mm/tlb.c:1083), depending on `should_defer_flush` (other CPUs in the mm's cpumask):
//!   one call per page inside the bracket, scope decided at run time. KVM implements no
//!   `arch_invalidate_secondary_tlbs`, so no double of any kind.
//!
//! Both generations: `madvise_pageout` walks inside one TLB-gather window, and the PTEs it finds young are aged
//! and gathered; `tlb_finish_mmu` then flushes them once (gather context; pre-6.6 that repeats the brackets' `_end`
//! over those pages: one `end_then_gather`). Whether any PTE is young at that moment is up to the MMU, so the truth
//! bounds these: at most one gather call and one `end_then_gather` of at most N pages.
//!
//! Exactness: pages still in another CPU's LRU-add batch would be skipped, so the process pins itself to one CPU
//! before writing them (then `lru_add_drain()` puts them all on the LRU). The truth counts the pages whose pagemap
//! entry is a swap entry afterwards, and the scenario fails unless that is all N (each such page had exactly one
//! bracket; a skipped page has none).

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth, NotifyEvent,
    ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, SwapOutParams, SwapTruth, TlbContext,
    TlbScope,
};

use crate::cgroups;
use crate::cli::SwapOutArgs;
use crate::kernel_api;
use crate::pagemap::Pagemap;
use crate::region::{AnonRegion, Thp, page_size};
use crate::subscriber;
use crate::swap::{self, ZramSwap};
use crate::sys::pin_to_current_cpu;
use crate::thp::PMD_BYTES;
use crate::vm::{self, GuestVm, Kvm};

pub const NAME: &str = "swap-out";

pub fn run(args: &SwapOutArgs) -> Result<GroundTruth> {
    // Before the cgroup, so that a refusal leaves nothing behind. Dropped last: swapoff after the memory is gone.
    let (zram, swap_device) = swap_area(NAME, args.zram_mib)?;
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let cpu = pin_to_current_cpu()?;
    let page = page_size()?;
    let bytes = usize::try_from(args.pages).ok().and_then(|p| p.checked_mul(page)).context("--pages too large")?;
    let memory = AnonRegion::map_isolated(bytes, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    memory.touch_all();
    let pagemap = Pagemap::open_self(page)?;
    let kvm = Kvm::open()?;
    let GuestVm { vms, memory } = GuestVm::over(&kvm, memory, 1)?;
    // --- KVM notifier registered: no allocation, free, print or mapping change until the VM is gone ---
    let advised = memory.advise(libc::MADV_PAGEOUT);
    let destroyed = vm::destroy_all(vms);
    // --- notifier gone ---
    advised.context("madvise(MADV_PAGEOUT)")?;
    destroyed?;
    let entries = pagemap.entries(memory.addr(), memory.pages())?;
    let swapped = entries.iter().filter(|e| e.swapped()).count() as u64;
    memory.unmap().context("unmapping guest memory")?;
    drop(zram);
    eprintln!("mmuscope-workload: {NAME}: {swapped} of {} pages swapped out to {swap_device} (CPU {cpu})", args.pages);
    if swapped != args.pages {
        bail!(
            "only {swapped} of {} pages were swapped out (swap full? pages not on the LRU?); truth unknown",
            args.pages
        );
    }

    let invalidations =
        InvalidationTruth::from_sources(vec![BracketSource::new(
        NotifyEvent::Clear,
        swapped,
        1,
        "madvise(MADV_PAGEOUT) of a written page that reclaim moved to swap",
        "madvise_pageout → madvise_cold_or_pageout_pte_range → reclaim_pages → shrink_folio_list → try_to_unmap → \
         try_to_unmap_one: MMU_NOTIFY_CLEAR [addr, addr+4K) (6.1 mm/rmap.c:1506, 6.12 :1673)",
    )
        .with_causes(Cause::Madvise, Some(Cause::Reclaim))]);
    let mut truth = GroundTruth::new(
        ScenarioParams::SwapOut(SwapOutParams { pages: args.pages, page_bytes: page as u64 }),
        cgroups,
        1,
        invalidations,
    );
    truth.kernel_api = kernel_api;
    truth.swap = Some(SwapTruth { advised_pages: args.pages, swapped_pages: swapped, swap_device });
    truth.double_notifications = Some(doubles(swapped, page as u64));
    truth.secondary_tlb = Some(subscriber::kvm_only(secondary_tlb(swapped, page as u64)));
    Ok(truth)
}

/// The swap area for scenario `name`: the first active one, or a new zram device of `zram_mib` MiB
/// (`--zram-mib`); else a clear refusal.
pub fn swap_area(name: &str, zram_mib: Option<u64>) -> Result<(Option<ZramSwap>, String)> {
    if let Some(area) = swap::active()?.into_iter().next() {
        return Ok((None, area.filename));
    }
    let Some(mib) = zram_mib else {
        bail!(
            "{name} needs an active swap area and {} lists none; pass --zram-mib 64 to create a temporary zram swap \
             device (needs the zram module), or enable swap",
            swap::PROC_SWAPS
        );
    };
    let zram = ZramSwap::create(mib, page_size()?).context("creating a zram swap device")?;
    let device = zram.device();
    eprintln!("mmuscope-workload: {name}: swapping to a temporary {mib} MiB {device}");
    Ok((Some(zram), device))
}

fn doubles(pages: u64, page: u64) -> DoubleNotificationTruth {
    let src = DoubleSource::new;
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    DoubleNotificationTruth {
        sources: vec![
            src(
                DoubleKind::EndAfterInLock,
                pages,
                pages * page,
                Some(Old),
                "->invalidate_range in the PTL after installing the swap entry, then again from the plain _end",
                "6.1 mm/rmap.c:1767 mmu_notifier_invalidate_range(mm, address, address + PAGE_SIZE), :1797 \
                 mmu_notifier_invalidate_range_end; KVM x86 implements ->invalidate_range (kvm_main.c:918)",
            ),
            src(
                DoubleKind::EndThenGather,
                0,
                0,
                Some(Old),
                YOUNG_FLUSH,
                "6.1 madvise_pageout: tlb_gather_mmu … madvise_cold_or_pageout_pte_range (young PTEs aged, \
                 tlb_remove_tlb_entry) … tlb_finish_mmu → tlb_flush_mmu_tlbonly",
            )
            .at_most(1, pages * page),
            src(
                DoubleKind::EndAfterInLock,
                0,
                0,
                Some(New),
                "no in-lock call and no ->invalidate_range on 6.6+",
                "6.12 try_to_unmap_one has no mmu_notifier_invalidate_range",
            ),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(New),
                "one secondary-TLB call per bracket, and no subscriber implements arch_invalidate_secondary_tlbs",
                "KVM's mmu_notifier_ops have no arch_invalidate_secondary_tlbs (6.12 kvm_main.c:917)",
            ),
            src(
                DoubleKind::OverlappingBrackets,
                0,
                0,
                None,
                "one bracket per page, disjoint",
                "try_to_unmap_one per folio",
            ),
        ],
    }
}

/// Why the gather flush of `madvise_pageout` is a bound, not a count.
const YOUNG_FLUSH: &str = "madvise_pageout's one TLB-gather window flushes the PTEs madvise_cold_or_pageout_pte_range \
    found young and aged before reclaim: once if any was young, not at all otherwise. Which were young when the walk \
    reached them is up to the MMU and reclaim, not the workload, so only the bound (one flush over at most every \
    page) is known";

/// The bracket context exactly; the gather window of `madvise_pageout` flushes the aged PTEs once more, or not (a
/// bound, [`YOUNG_FLUSH`]); anything after the VM's destruction notifies nobody.
fn secondary_tlb(pages: u64, page: u64) -> SecondaryTlbTruth {
    let young_flush = |api, kernel_path: &str| SecondaryTlbSource {
        count_max: Some(1),
        api,
        context: TlbContext::Gather,
        scope: None,
        count: 0,
        bytes: None,
        cause: YOUNG_FLUSH.to_owned(),
        kernel_path: kernel_path.to_owned(),
    };
    SecondaryTlbTruth {
        sources: vec![
            young_flush(
                SecondaryTlbApi::InvalidateRange,
                "6.1 madvise_pageout → tlb_finish_mmu → tlb_flush_mmu_tlbonly → mmu_notifier_invalidate_range",
            ),
            young_flush(
                SecondaryTlbApi::ArchInvalidateSecondaryTlbs,
                "6.12 madvise_pageout → tlb_finish_mmu → flush_tlb_mm_range → \
                 mmu_notifier_arch_invalidate_secondary_tlbs",
            ),
            SecondaryTlbSource {
                count_max: None,
                api: SecondaryTlbApi::InvalidateRange,
                context: TlbContext::Bracket,
                scope: Some(TlbScope::Range),
                count: pages,
                bytes: Some(pages * page),
                cause: "swap entry installed under the PTL".to_owned(),
                kernel_path: "6.1 try_to_unmap_one → mmu_notifier_invalidate_range (mm/rmap.c:1767)".to_owned(),
            },
            SecondaryTlbSource {
                count_max: None,
                api: SecondaryTlbApi::InvalidateRange,
                context: TlbContext::Bracket,
                scope: Some(TlbScope::Range),
                count: pages,
                bytes: Some(pages * page),
                cause: "the bracket's plain _end calls ->invalidate_range over its 4 KiB".to_owned(),
                kernel_path: "6.1 mm/rmap.c:1797 → __mmu_notifier_invalidate_range_end(range, false) → \
                              mn_hlist_invalidate_end: !only_end && ops->invalidate_range (mm/mmu_notifier.c:575)"
                    .to_owned(),
            },
            SecondaryTlbSource {
                count_max: None,
                api: SecondaryTlbApi::ArchInvalidateSecondaryTlbs,
                context: TlbContext::Bracket,
                scope: None,
                count: pages,
                bytes: None,
                cause: "the PTE clear's TLB flush (batched: whole mm; direct: the page)".to_owned(),
                kernel_path: "6.12 try_to_unmap_one → set_tlb_ubc_flush_pending → arch_tlbbatch_add_pending (0, ~0) \
                              or ptep_clear_flush → flush_tlb_mm_range (mm/rmap.c:1805/1807)"
                    .to_owned(),
            },
        ],
    }
}
