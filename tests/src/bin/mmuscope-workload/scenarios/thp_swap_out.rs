//! `thp-swap-out --thps N [--zram-mib M]`: N PMD-mapped THPs (built before the VM) are paged out whole with one
//! `madvise(MADV_PAGEOUT)` each while the VM exists: reclaim's unmap of a PMD-mapped THP, which splits the PMD.
//! Needs an active swap area (or `--zram-mib`, as `swap-out`).
//!
//! Path: `madvise_cold_or_pageout_pte_range` isolates the whole THP (its range covers the PMD, so madvise itself
//! does not split) `→ reclaim_pages → shrink_folio_list`: `add_to_swap` takes a THP-sized swap cluster, then
//! `try_to_unmap(folio, TTU_SPLIT_HUGE_PMD | TTU_BATCH_FLUSH)` `→ try_to_unmap_one`. Where it splits decides the
//! brackets per THP:
//!
//! * before 6.11 (6.1): `split_huge_pmd_address(vma, A, freeze=false)` first → `__split_huge_pmd`, a
//!   `MMU_NOTIFY_CLEAR [A, A+2M)` bracket (cause `thp_split`), then `try_to_unmap_one`'s own `MMU_NOTIFY_CLEAR
//!   [A, A+2M)` bracket over the 512 PTEs (cause `reclaim`, the `shrink_folio_list` window);
//! * 6.11+ (6.12, 7.2; "mm/rmap: integrate PMD-mapped folio splitting into pagewalk loop"): one bracket,
//!   `try_to_unmap_one`'s, opened for reclaim, in whose walk `split_huge_pmd_locked` splits the PMD. The split
//!   re-tags it `thp_split` (the in-bracket split hook). `split_huge_pmd_locked` itself came with that change, so its
//!   presence in BTF tells the generations apart.
//!
//! Secondary-TLB invalidations and doubles are not specified: the PTE clears flush directly or through the
//! deferred batch depending on `should_defer_flush` (other CPUs in the mm's cpumask), and `madvise_pageout`'s gather
//! flushes the PMD again when it was young; the counts follow from run-time state the workload does not see.
//!
//! Premise, from the kernel's own counters: `/proc/vmstat` `thp_swpout` grows by N and `thp_swpout_fallback` not
//! at all (a THP that fell back to small pages is split by `split_huge_page` first: other brackets), and each THP's
//! 512 pagemap entries are swap entries afterwards.

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::{
    BracketSource, Cause, GroundTruth, InvalidationTruth, NotifyEvent, ScenarioParams, SwapTruth, ThpSwapOutParams,
};

use super::swap_out::swap_area;
use crate::cgroups;
use crate::cli::ThpSwapOutArgs;
use crate::kernel_api;
use crate::pagemap::Pagemap;
use crate::region::{AnonRegion, Thp, page_size};
use crate::sys::pin_to_current_cpu;
use crate::thp::{self, PMD_BYTES};
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "thp-swap-out";
const COUNTERS: &[&str] = &["thp_swpout", "thp_swpout_fallback"];

pub fn run(args: &ThpSwapOutArgs) -> Result<GroundTruth> {
    // Before the cgroup, so that a refusal leaves nothing behind. Dropped last: swapoff after the memory is gone.
    let (zram, swap_device) = swap_area(NAME, args.zram_mib)?;
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let n = args.thps;
    let in_walk = kernel_api::unmap_splits_in_walk().context("telling from BTF where try_to_unmap_one splits")?;
    pin_to_current_cpu()?;
    let page = page_size()?;
    let mut thps = Vec::with_capacity(n as usize);
    for i in 0..n {
        thps.push(thp::pmd_mapped_region().with_context(|| format!("THP {i}"))?);
    }
    let pagemap = Pagemap::open_self(page)?;
    let before = thp::vmstat(COUNTERS)?;
    let kvm = Kvm::open()?;
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    let guest = GuestVm::over(&kvm, memory, 1)?;
    // --- KVM notifier registered: no allocation, free, print or other mapping change until teardown ---
    let advised = thps.iter().try_for_each(|t| t.advise(libc::MADV_PAGEOUT));
    let teardown = guest.teardown();
    // --- notifier gone ---
    advised.context("madvise(MADV_PAGEOUT)")?;
    teardown?;
    let after = thp::vmstat(COUNTERS)?;
    let [swpout, fallback] = [0, 1].map(|i| after[i] - before[i]);
    let mut swapped = 0;
    for t in &thps {
        swapped += pagemap.entries(t.addr(), t.pages())?.iter().filter(|e| e.swapped()).count() as u64;
    }
    drop(thps);
    drop(zram);
    let pages = n * (PMD_BYTES / page) as u64;
    eprintln!(
        "mmuscope-workload: {NAME}: {n} THPs paged out to {swap_device}: thp_swpout +{swpout}, thp_swpout_fallback \
         +{fallback}, {swapped} of {pages} pages swapped; split {}",
        if in_walk { "in try_to_unmap_one's walk" } else { "before try_to_unmap_one's bracket" }
    );
    if (swpout, fallback, swapped) != (n, 0, pages) {
        bail!("not every THP was swapped out whole (swap full? no THP swap?); truth unknown");
    }

    let unmap = BracketSource::new(
        NotifyEvent::Clear,
        n,
        1,
        if in_walk {
            "reclaim's unmap of a PMD-mapped THP, which splits the PMD in its walk"
        } else {
            "reclaim's unmap of the THP's 512 PTEs, after the split"
        },
        "madvise_pageout → reclaim_pages → shrink_folio_list → try_to_unmap(TTU_SPLIT_HUGE_PMD) → try_to_unmap_one: \
         MMU_NOTIFY_CLEAR [A, A+2M) (6.11+: split_huge_pmd_locked inside the walk)",
    )
    .with_causes(Cause::Madvise, Some(if in_walk { Cause::ThpSplit } else { Cause::Reclaim }));
    let split = BracketSource::new(
        NotifyEvent::Clear,
        n,
        1,
        "reclaim splits the PMD before unmapping",
        "6.1 try_to_unmap_one → split_huge_pmd_address(freeze=false) → __split_huge_pmd",
    )
    .with_causes(Cause::Madvise, Some(Cause::ThpSplit));
    let sources = if in_walk { vec![unmap] } else { vec![split, unmap] };
    let params = ThpSwapOutParams { thps: n, thp_bytes: PMD_BYTES as u64 };
    let mut truth =
        GroundTruth::new(ScenarioParams::ThpSwapOut(params), cgroups, 1, InvalidationTruth::from_sources(sources));
    truth.kernel_api = kernel_api;
    truth.swap = Some(SwapTruth { advised_pages: pages, swapped_pages: swapped, swap_device });
    Ok(truth)
}
