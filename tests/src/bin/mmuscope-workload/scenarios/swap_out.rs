//! `swap-out --pages N [--zram-mib M] [--subscriber kvm|sectlb]`: N written pages (`MADV_NOHUGEPAGE`, isolated) of
//! the subscriber's memory (a KVM VM's memslot, or the test module's secondary-TLB subscriber on the mm) are paged
//! out with one `madvise(MADV_PAGEOUT)`. Needs an active swap area; without one it refuses, unless `--zram-mib` lets it
//! create a temporary zram swap device (removed afterwards).
//!
//! Path: `madvise_pageout` (`lru_add_drain()` first: 6.1 mm/madvise.c:586, 6.12 :642; then one TLB-gather window,
//! `tlb_gather_mmu … tlb_finish_mmu`, around the whole walk) `→ madvise_cold_or_pageout_pte_range` isolates every
//! exclusively mapped LRU page `→ reclaim_pages → shrink_folio_list` (`add_to_swap`, then `try_to_unmap(folio,
//! TTU_BATCH_FLUSH)`: 6.1 mm/vmscan.c:1887, 6.12 :1326) `→ try_to_unmap_one`: one `MMU_NOTIFY_CLEAR` bracket per
//! page over `[address, address + 4 KiB)` (6.1 mm/rmap.c:1506, 6.12 :1673), in which the PTE becomes a swap entry.
//!
//! Secondary-TLB calls, per generation (every figure exact; both subscribers implement the op before 6.6, only the
//! test module from 6.6):
//! * pre-6.6 (`invalidate_range`), per page inside its bracket: after `set_pte_at(swp_pte)`, under the page-table
//!   lock, `mmu_notifier_invalidate_range(mm, address, address + PAGE_SIZE)` (6.1 mm/rmap.c:1767), then the plain
//!   `mmu_notifier_invalidate_range_end` (:1797) calls `->invalidate_range` over the same 4 KiB again: two calls
//!   and one `end_after_in_lock` double of 4 KiB. The PTE clear itself notifies nobody on 6.1 (`ptep_clear_flush`,
//!   or with other CPUs in the mm's cpumask `set_tlb_ubc_flush_pending` and later `try_to_unmap_flush`: x86's
//!   flushes have no notifier call before 6.6). Then the gather: the walk ages every young PTE before isolating
//!   its page (`if (pte_young(ptent))`: `ptep_get_and_clear_full`, `pte_mkold`, `set_pte_at`,
//!   `tlb_remove_tlb_entry`), and every PTE is young ([`run`] writes each page, which sets the accessed bit, and
//!   nothing in between ages them: no memory pressure, no idle-page tracking or DAMON on the region), so
//!   `tlb_finish_mmu → tlb_flush_mmu_tlbonly → mmu_notifier_invalidate_range(mm, tlb->start, tlb->end)` (6.1
//!   include/asm-generic/tlb.h:447) covers exactly the N pages once, after their brackets' `_end` already did: one
//!   gather call of N × 4 KiB and one `end_then_gather` double of N × 4 KiB.
//! * 6.6+ (`arch_invalidate_secondary_tlbs`): no in-lock call and no `_end` callback. The PTE clear notifies from
//!   the x86 flush, inside the bracket: `should_defer_flush` (any other CPU in the mm's cpumask) picks
//!   `set_tlb_ubc_flush_pending → arch_tlbbatch_add_pending → (mm, 0, ~0)` (6.12 mm/rmap.c:1805,
//!   arch/x86/include/asm/tlbflush.h:287; a later walk of the mm may flush that batch again through
//!   `flush_tlb_batched_pending → flush_tlb_mm`), else `ptep_clear_flush → flush_tlb_page → flush_tlb_mm_range(mm, addr, addr + 4K)` (mm/rmap.c:
//!   1807, arch/x86/mm/tlb.c:1083; one page, under `tlb_single_page_flush_ceiling`, stays a range). With one
//!   possible CPU nothing can be deferred, so each page is exactly one range call of 4 KiB; with more, which path
//!   a page takes depends on where the scheduler ran the mm, so the truth gives the count only (KVM: nobody
//!   receives them anyway) and the test module's scenario refuses to run. No gather call: since 6.10 ("mm:
//!   madvise: pageout: ignore references rather than clearing young") the pageout walk leaves young PTEs alone
//!   (`if (!pageout && pte_young(ptent))`), so the gather window holds nothing to flush. One call per bracket and
//!   none elsewhere: no double of any kind (and with KVM the calls reach nobody, 6.12 virt/kvm/kvm_main.c:917).
//!
//! Exactness: pages still in another CPU's LRU-add batch would be skipped, so the process pins itself to one CPU
//! before writing them (then `lru_add_drain()` puts them all on the LRU). The truth counts the pages whose pagemap
//! entry is a swap entry afterwards, and the scenario fails unless that is all N (each such page had exactly one
//! bracket; a skipped page has none). With `--subscriber sectlb` the module's own count must equal the truth's
//! calls for the kernel's API before the truth is written (`subscriber::finish`).

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::Cause;
use mmuscope_tests::truth::{
    BracketSource, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth, NotifyEvent,
    ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, SwapOutParams, SwapTruth, TlbContext,
    TlbScope,
};

use crate::cgroups;
use crate::cli::{SubscriberKind, SwapOutArgs};
use crate::kernel_api;
use crate::pagemap::Pagemap;
use crate::region::{AnonRegion, Thp, page_size};
use crate::subscriber::{self, Subscribed};
use crate::swap::{self, ZramSwap};
use crate::sys::{pin_to_current_cpu, possible_cpus};
use crate::thp::PMD_BYTES;

pub const NAME: &str = "swap-out";

pub fn run(args: &SwapOutArgs) -> Result<GroundTruth> {
    let kernel_api = kernel_api::detect();
    let cpus = possible_cpus()?;
    // On 6.6+ the module receives every PTE clear's call, whose scope only one CPU makes certain (module docs).
    if args.subscriber.subscriber == SubscriberKind::Sectlb
        && kernel_api == Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs)
        && cpus > 1
    {
        bail!(
            "{NAME} --subscriber sectlb on a 6.6+ kernel needs one possible CPU ({cpus} here): with more, reclaim \
             may defer a page's flush to arch_tlbbatch_add_pending (0, ~0) instead of flushing its 4 KiB, and \
             which it does is up to the scheduler"
        );
    }
    // Before the cgroup, so that a refusal leaves nothing behind. Dropped last: swapoff after the memory is gone.
    let (zram, swap_device) = swap_area(NAME, args.zram_mib)?;
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let cpu = pin_to_current_cpu()?;
    let page = page_size()?;
    let bytes = usize::try_from(args.pages).ok().and_then(|p| p.checked_mul(page)).context("--pages too large")?;
    let memory = AnonRegion::map_isolated(bytes, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    // The writes that make every PTE present, dirty and young (the pre-6.6 gather flush covers the young ones).
    memory.touch_all();
    let pagemap = Pagemap::open_self(page)?;
    let guest = Subscribed::over(&args.subscriber, memory)?;
    let vms = guest.vms();
    // --- subscriber registered: no allocation, free, print or mapping change until it is gone ---
    let advised = guest.memory().advise(libc::MADV_PAGEOUT);
    let unsubscribed = guest.unsubscribe();
    // --- subscriber gone ---
    advised.context("madvise(MADV_PAGEOUT)")?;
    let (memory, received) = unsubscribed?;
    let entries = pagemap.entries(memory.addr(), memory.pages())?;
    let swapped = entries.iter().filter(|e| e.swapped()).count() as u64;
    memory.unmap().context("unmapping guest memory")?;
    drop(zram);
    eprintln!(
        "mmuscope-workload: {NAME}: {swapped} of {} pages swapped out to {swap_device} (CPU {cpu} of {cpus})",
        args.pages
    );
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
        vms,
        "madvise(MADV_PAGEOUT) of a written page that reclaim moved to swap",
        "madvise_pageout → madvise_cold_or_pageout_pte_range → reclaim_pages → shrink_folio_list → try_to_unmap → \
         try_to_unmap_one: MMU_NOTIFY_CLEAR [addr, addr+4K) (6.1 mm/rmap.c:1506, 6.12 :1673)",
    )
        .with_causes(Cause::Madvise, Some(Cause::Reclaim))]);
    let mut truth = GroundTruth::new(
        ScenarioParams::SwapOut(SwapOutParams { pages: args.pages, page_bytes: page as u64 }),
        cgroups,
        vms,
        invalidations,
    );
    truth.kernel_api = kernel_api;
    truth.swap = Some(SwapTruth { advised_pages: args.pages, swapped_pages: swapped, swap_device });
    truth.double_notifications = Some(doubles(swapped, page as u64, 1));
    subscriber::finish(&mut truth, secondary_tlb(swapped, page as u64, cpus == 1, 1), received)?;
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

/// The double notifications of `pages` pages paged out by one `madvise_pageout` call over `vmas` VMAs, each with
/// its own gather flush (`madvise_pageout` → `tlb_end_vma` → `tlb_flush_mmu_tlbonly`, 5.10.262
/// include/asm-generic/tlb.h:519-531): also `cross-cgroup`'s where it pages out.
pub fn doubles(pages: u64, page: u64, vmas: u64) -> DoubleNotificationTruth {
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
                 mmu_notifier_invalidate_range_end → ->invalidate_range (mm/mmu_notifier.c:575-576)",
            ),
            src(
                DoubleKind::EndThenGather,
                vmas,
                pages * page,
                Some(Old),
                "the gather flush of the aged (young) PTEs covers every page, each already invalidated by its \
                 bracket's plain _end",
                "6.1 madvise_pageout: tlb_gather_mmu … madvise_cold_or_pageout_pte_range (pte_young: aged, \
                 tlb_remove_tlb_entry) … tlb_finish_mmu → tlb_flush_mmu_tlbonly → mmu_notifier_invalidate_range \
                 (include/asm-generic/tlb.h:447)",
            ),
            src(
                DoubleKind::EndAfterInLock,
                0,
                0,
                Some(New),
                "no in-lock call and no _end callback on 6.6+",
                "6.12 try_to_unmap_one has no mmu_notifier_invalidate_range",
            ),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(New),
                "one secondary-TLB call per bracket over its own page, and no gather flush: nothing to overlap",
                "6.12 ptep_clear_flush → flush_tlb_mm_range (mm/rmap.c:1807); the pageout walk gathers nothing",
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

/// The secondary-TLB calls of `pages` pages paged out (module docs) over `vmas` VMAs (one gather flush each), per
/// generation and context. `one_cpu`: the kernel has one possible CPU, so 6.6+ reclaim flushes each page directly (a
/// 4 KiB range) and defers none.
pub fn secondary_tlb(pages: u64, page: u64, one_cpu: bool, vmas: u64) -> SecondaryTlbTruth {
    let range = |api, context, count: u64, bytes: u64, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, context, Some(TlbScope::Range), count, bytes, cause, kernel_path)
    };
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let flush = "6.12 try_to_unmap_one → ptep_clear_flush → flush_tlb_page → flush_tlb_mm_range(mm, addr, addr+4K) \
                 (mm/rmap.c:1807, arch/x86/mm/tlb.c:1083)";
    let in_bracket_6_6 = if one_cpu {
        range(
            New,
            TlbContext::Bracket,
            pages,
            pages * page,
            "the PTE clear's flush of its page (one CPU: never deferred)",
            flush,
        )
    } else {
        SecondaryTlbSource {
            scope: None,
            bytes: None,
            cause: "the PTE clear's flush: direct (its 4 KiB) or deferred (whole mm), by the mm's cpumask".to_owned(),
            kernel_path: format!(
                "{flush}, or set_tlb_ubc_flush_pending → arch_tlbbatch_add_pending (0, ~0) (mm/rmap.c:1805, \
                 arch/x86/include/asm/tlbflush.h:287)"
            ),
            ..range(New, TlbContext::Bracket, pages, 0, "", "")
        }
    };
    SecondaryTlbTruth {
        sources: vec![
            range(
                Old,
                TlbContext::Bracket,
                pages,
                pages * page,
                "swap entry installed under the PTL",
                "6.1 try_to_unmap_one → mmu_notifier_invalidate_range (mm/rmap.c:1767)",
            ),
            range(
                Old,
                TlbContext::Bracket,
                pages,
                pages * page,
                "the bracket's plain _end calls ->invalidate_range over its 4 KiB",
                "6.1 mm/rmap.c:1797 → __mmu_notifier_invalidate_range_end(range, false) → mn_hlist_invalidate_end: \
                 !only_end && ops->invalidate_range (mm/mmu_notifier.c:575)",
            ),
            range(
                Old,
                TlbContext::Gather,
                vmas,
                pages * page,
                "madvise_pageout's gather window flushes the N PTEs its walk aged (all young: written, never aged)",
                "6.1 madvise_pageout → tlb_finish_mmu → tlb_flush_mmu_tlbonly → mmu_notifier_invalidate_range(mm, \
                 tlb->start, tlb->end) (include/asm-generic/tlb.h:447)",
            ),
            in_bracket_6_6,
            range(
                New,
                TlbContext::Gather,
                0,
                0,
                "the pageout walk ages no PTE since 6.10, so tlb_finish_mmu has nothing to flush",
                "6.12 madvise_cold_or_pageout_pte_range: if (!pageout && pte_young(ptent)); tlb_flush_mmu_tlbonly \
                 returns without cleared_ptes",
            ),
        ],
    }
}
