//! `thp-split`: N PMD-mapped THPs (built before the VM, as in `thp-partial-munmap`) are split whole by
//! `split_huge_page` through `/sys/kernel/debug/split_huge_pages`, with the VM registered. This is the split path
//! that `__split_huge_pmd` alone does not cover: `split_huge_page` unmaps the folio (`unmap_folio`/`unmap_page` →
//! `try_to_migrate(TTU_SPLIT_HUGE_PMD | TTU_SYNC)`, on 5.10 `try_to_unmap(TTU_SPLIT_HUGE_PMD | TTU_SPLIT_FREEZE |
//! TTU_SYNC)`), and `try_to_migrate_one` (5.10: `try_to_unmap_one`) freezes the PMD into migration entries.
//!
//! The trigger is what the file accepts ([`Trigger::probe`]):
//! * 5.13+: `<pid>,0x<start>,0x<end>`, one write per THP, which splits the THPs of that range only;
//! * 5.10: only `1` (mm/huge_memory.c `split_huge_pages_set`: `val != 1` is `EINVAL`), which walks every PFN of
//!   every zone and splits every THP on the LRU: one write splits the N THPs, and every other THP of the system.
//!   The others' brackets are on mms without a notifier (the guest's other processes; only this one registers KVM),
//!   so none is seen. This mm's own must be exactly the N: before building them the scenario writes `1` once with
//!   nothing subscribed (a heap block of this process may be a THP: Debian's THP mode is `always`), then it counts
//!   the pages of this mm that belong to a THP (`/proc/kpageflags` of every present page, PMD- or PTE-mapped, anon or
//!   file) and refuses unless they are the N THPs' pages and none elsewhere. Afterwards none of the N's pages may
//!   still belong to a THP (a failed split, `can_split_huge_page`, would leave one); the system-wide counters only
//!   bound the count from below.
//!
//! Where the unmap freezes decides the brackets per THP:
//!
//! * before 6.16 (5.10, 6.1, 6.12): first `split_huge_pmd_address(vma, A, freeze=true)` → `__split_huge_pmd`, a
//!   `MMU_NOTIFY_CLEAR [A, A+2M)` bracket of its own (5.10.262 mm/huge_memory.c:2219-2222 … :2287; 6.1
//!   :2312-2322; 6.12 :2964-2973), then `try_to_migrate_one`'s (5.10: `try_to_unmap_one`'s) own `MMU_NOTIFY_CLEAR
//!   [A, A+2M)` bracket for the (now empty) PTE walk (5.10.262 mm/rmap.c:1420-1430 … :1742: the walk matches no
//!   migration entry without `PVMW_MIGRATION`, mm/page_vma_mapped.c:89-113; 6.1 mm/rmap.c:1898-1903; 6.12
//!   :2087-2098). The second lies inside the first's range, in the same write: one `overlapping_brackets` double of
//!   2 MiB per THP;
//! * 6.16+ (7.2; 60fbb14396d5): one bracket, `try_to_migrate_one`'s, which calls `split_huge_pmd_locked(…,
//!   freeze=true)` in its walk. The workload tells the two apart from BTF (`kernel_api::migrate_splits_in_walk`).
//!
//! Every one of them is tagged `thp_split` where the cause hooks attach: by the `__split_huge_pmd` window, or by the
//! `split_huge_page` window (`split_huge_page_to_list` on 5.10 and 6.1, `split_huge_page_to_list_to_order` on 6.12,
//! `__folio_split` on 7.x). Without that window the unmap's bracket took the write system call's cause
//! (`other_syscall`).
//!
//! Secondary-TLB invalidations per THP:
//! * pre-6.6: none in the split bracket (`pmdp_invalidate` calls no notifier, and it closes with `_only_end`: one
//!   `avoided_only_end`); the second bracket's plain `_end` calls `->invalidate_range [A, A+2M)` (bracket context,
//!   range). Its walk finds no present PTE (the PMD is frozen into migration entries), so nothing in the lock and no
//!   gather: no `end_after_in_lock`, no `end_then_gather`;
//! * 6.6+: one, inside whichever bracket splits, from `pmdp_invalidate → flush_pmd_tlb_range → flush_tlb_mm_range`;
//!   its scope depends on the stride x86 flushes a PMD range with (as in `thp-partial-munmap`: `full_mm` on 6.12,
//!   the range on 7.2), so the truth gives the count. KVM implements no `arch_invalidate_secondary_tlbs`, so the
//!   call reaches no implementer and the agent counts none (`subscriber::kvm_only`); no `overlapping_secondary_tlb`.
//!
//! The premise: no page of the N THPs belongs to a THP afterwards (`/proc/kpageflags`), and none is PMD-mapped;
//! `/proc/vmstat`'s `thp_split_page` and `thp_split_pmd`, which count every process's splits, grew by N or more.
//!
//! `split_huge_page` refuses a folio with a reference it cannot account for (`can_split_folio`). A freshly faulted
//! THP can still sit in this CPU's LRU-add batch, which holds one (seen on 6.12: no split, nothing counted), so the
//! process pins itself to one CPU and drains the batch (`MADV_COLD` of an empty region runs `lru_add_drain()`)
//! before splitting.

use std::io::Write;

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::{
    BracketSource, Cause, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth,
    NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, ThpSplitParams, TlbContext,
    TlbScope,
};

use crate::cgroups;
use crate::cli::ThpSplitArgs;
use crate::kernel_api;
use crate::region::{AnonRegion, Thp, page_size};
use crate::subscriber;
use crate::sys::pin_to_current_cpu;
use crate::thp::{self, PMD_BYTES};
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "thp-split";
const SPLIT_HUGE_PAGES: &str = "/sys/kernel/debug/split_huge_pages";
/// The premise's system-wide part, from `/proc/vmstat`: at least N splits, as pages and as PMDs.
const COUNTERS: &[&str] = &["thp_split_page", "thp_split_pmd", "thp_split_page_failed"];

pub fn run(args: &ThpSplitArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let n = args.iterations;
    // None (5.10, 6.1: no split_huge_pmd_locked) is the split-first generation too.
    let in_walk = kernel_api::migrate_splits_in_walk()
        .context("telling from BTF where try_to_migrate_one splits a PMD")?
        .unwrap_or(false);
    pin_to_current_cpu()?;
    let pid = std::process::id();
    let mut control = std::fs::OpenOptions::new()
        .write(true)
        .open(SPLIT_HUGE_PAGES)
        .with_context(|| format!("opening {SPLIT_HUGE_PAGES} (debugfs mounted? CONFIG_TRANSPARENT_HUGEPAGE?)"))?;
    let trigger = Trigger::probe(&mut control, pid)?;
    if trigger == Trigger::All {
        // Nothing is subscribed yet: splits whatever THPs this process already has (a heap block, say), so that
        // the ones built next are its only ones.
        let before = thp::vmstat(COUNTERS)?;
        control.write_all(b"1").with_context(|| format!("writing 1 to {SPLIT_HUGE_PAGES} before building THPs"))?;
        let after = thp::vmstat(COUNTERS)?;
        eprintln!(
            "mmuscope-workload: {NAME}: split_huge_pages 1 before building THPs (no subscriber yet): thp_split_page \
             +{}, thp_split_page_failed +{} system-wide",
            after[0] - before[0],
            after[2] - before[2]
        );
    }
    let mut thps = Vec::with_capacity(n as usize);
    for i in 0..n {
        thps.push(thp::pmd_mapped_region().with_context(|| format!("THP {i}"))?);
    }
    // khugepaged must not collapse a split THP again (seen on 6.12 under load: split and counted, then PMD-mapped
    // again when checked). MADV_NOHUGEPAGE only changes the VMA's flags: no page-table change, no bracket.
    for t in &thps {
        t.advise(libc::MADV_NOHUGEPAGE).context("madvise(MADV_NOHUGEPAGE) of a THP")?;
    }
    // Nor any other region of this mm (heap, stack: Debian's THP mode is `always`, and khugepaged collapses a 2 MiB
    // range with a single populated page): seen on 7.2, fentry, one CLEAR bracket from khugepaged inside the VM's
    // lifetime, which the kernel's own references counted too. The flag only stops new THPs (faults, khugepaged);
    // split_huge_page of the built ones does not consult it, and setting it changes no page table.
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("prctl(PR_SET_THP_DISABLE) after building the THPs");
    }
    // Every request written before the VM exists: the writes themselves must allocate nothing.
    let ranges: Vec<(u64, u64)> = thps.iter().map(|t| (t.addr(), t.addr() + PMD_BYTES as u64)).collect();
    let requests: Vec<String> = match trigger {
        Trigger::Range => ranges.iter().map(|(start, end)| format!("{pid},{start:#x},{end:#x}")).collect(),
        Trigger::All => vec!["1".to_owned()],
    };
    // Drains this CPU's LRU-add batch: an empty region has nothing to age.
    AnonRegion::map(page_size()?)
        .and_then(|r| r.advise(libc::MADV_COLD))
        .context("madvise(MADV_COLD) to drain the LRU-add batch")?;
    if trigger == Trigger::All {
        // Every THP of this mm is split, so these must be all of them (the VM maps none: `Thp::Never`).
        let want = n * (PMD_BYTES / page_size()?) as u64;
        let (inside, outside) = thp::splittable_thp_pages(&ranges)?;
        if (inside, outside) != (want, 0) {
            bail!(
                "this mm has {inside} THP pages in the {n} THPs built and {outside} elsewhere before the VM; \
                 splitting every THP of the system needs exactly {want} and 0"
            );
        }
    }
    let before = thp::vmstat(COUNTERS)?;
    let kvm = Kvm::open()?;
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    let guest = GuestVm::over(&kvm, memory, 1)?;
    // --- KVM notifier registered: no allocation, free, print or other mapping change until teardown ---
    let exercised = requests.iter().try_for_each(|r| control.write_all(r.as_bytes()));
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.context("writing to split_huge_pages")?;
    teardown?;
    let after = thp::vmstat(COUNTERS)?;
    let [pages, pmds, failed] = [0, 1, 2].map(|i| after[i] - before[i]);
    // The counters are system-wide: another process's splits in the window add to them (seen on 6.1: thp_split_pmd
    // +5 for 4, with `Trigger::Range`), so they only bound this mm's from above; its own THPs are checked page by page.
    let (inside, _) = thp::splittable_thp_pages(&ranges)?;
    if inside != 0 || pages < n || pmds < n {
        bail!(
            "{inside} pages of the {n} THPs still belong to a THP (split failed); /proc/vmstat: thp_split_page \
             +{pages}, thp_split_pmd +{pmds}, thp_split_page_failed +{failed} system-wide"
        );
    }
    for t in &thps {
        let kib = thp::pmd_mapped_kib(t.addr())?;
        if kib != 0 {
            bail!("the THP at {:#x} is still PMD-mapped ({kib} kB) after split_huge_pages", t.addr());
        }
    }
    drop(thps);
    let place = if in_walk { "in try_to_migrate_one's walk" } else { "before the unmap's own bracket" };
    eprintln!(
        "mmuscope-workload: {NAME}: {n} THPs split by split_huge_page ({place}; split_huge_pages {}), VM destroyed; \
         system-wide thp_split_page +{pages}, thp_split_pmd +{pmds}, thp_split_page_failed +{failed}",
        trigger.describe()
    );

    let split_bracket = BracketSource::new(
        NotifyEvent::Clear,
        n,
        1,
        "split_huge_page of a PMD-mapped THP: the PMD split, frozen to migration entries",
        "split_huge_pages_write → split_huge_page → unmap_folio → try_to_migrate → try_to_migrate_one → \
         split_huge_pmd_address(freeze) → __split_huge_pmd (6.1 mm/huge_memory.c:2312-2322; 5.10: \
         split_huge_pages_set → unmap_page → try_to_unmap → try_to_unmap_one, mm/huge_memory.c:2219-2222)",
    )
    .with_causes(Cause::OtherSyscall, Some(Cause::ThpSplit));
    let migrate_bracket = BracketSource::new(
        NotifyEvent::Clear,
        n,
        1,
        if in_walk {
            "split_huge_page of a PMD-mapped THP: try_to_migrate_one's bracket, which splits the PMD in its walk"
        } else {
            "split_huge_page of a PMD-mapped THP: the unmap's own bracket after the PMD split"
        },
        "try_to_migrate_one (5.10: try_to_unmap_one with TTU_SPLIT_FREEZE): mmu_notifier_range_init(MMU_NOTIFY_CLEAR) \
         over the folio (5.10.262 mm/rmap.c:1420-1430; 6.1 :1898-1903; 6.16+: split_huge_pmd_locked(freeze) inside \
         its page walk)",
    )
    .with_causes(Cause::OtherSyscall, Some(Cause::ThpSplit));
    let sources = if in_walk { vec![migrate_bracket] } else { vec![split_bracket, migrate_bracket] };
    let invalidations = InvalidationTruth::from_sources(sources);
    let params = ThpSplitParams { iterations: n, thp_bytes: PMD_BYTES as u64 };
    let mut truth = GroundTruth::new(ScenarioParams::ThpSplit(params), cgroups, 1, invalidations);
    truth.kernel_api = kernel_api;
    truth.double_notifications = Some(doubles(n, in_walk));
    truth.secondary_tlb = Some(subscriber::kvm_only(secondary_tlb(n)));
    Ok(truth)
}

/// How this kernel's `split_huge_pages` takes a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// `<pid>,0x<start>,0x<end>`: the THPs in one range of one process (5.13+).
    Range,
    /// Only `1`: every THP of the system (5.10).
    All,
}

impl Trigger {
    /// Asks the file itself: a request for a range of this process with no page in it splits nothing where ranges
    /// are understood, and is `EINVAL` where only `1` is (5.10's `kstrtoull` of the whole input fails, fs/libfs.c
    /// `simple_attr_write_xsigned`).
    fn probe(control: &mut std::fs::File, pid: u32) -> Result<Self> {
        let empty = AnonRegion::map(page_size()?).context("mapping an untouched page for the probe")?;
        let request = format!("{pid},{:#x},{:#x}", empty.addr(), empty.addr() + empty.len() as u64);
        match control.write_all(request.as_bytes()) {
            Ok(()) => Ok(Self::Range),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(Self::All),
            Err(e) => Err(e).with_context(|| format!("probing {SPLIT_HUGE_PAGES} with {request:?}")),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Range => "<pid>,<start>,<end> per THP",
            Self::All => "1 (every THP of the system)",
        }
    }
}

/// Per generation, for `n` THPs split (see the module docs).
fn secondary_tlb(n: u64) -> SecondaryTlbTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    SecondaryTlbTruth {
        sources: vec![
            SecondaryTlbSource {
                api: Old,
                context: TlbContext::Bracket,
                scope: Some(TlbScope::Range),
                count: n,
                count_max: None,
                bytes: Some(n * PMD_BYTES as u64),
                cause: "try_to_migrate_one's plain _end over the folio (the split's _only_end has none)".to_owned(),
                kernel_path: "6.1 mm/rmap.c try_to_migrate_one → mmu_notifier_invalidate_range_end → \
                              mn_hlist_invalidate_end !only_end (mm/mmu_notifier.c:575)"
                    .to_owned(),
            },
            SecondaryTlbSource {
                api: New,
                context: TlbContext::Bracket,
                scope: None,
                count: n,
                count_max: None,
                bytes: None,
                cause: "the frozen split's pmdp_invalidate flushes the PMD range (whichever bracket splits)".to_owned(),
                kernel_path: "6.12 __split_huge_pmd_locked → pmdp_invalidate → flush_pmd_tlb_range → \
                              flush_tlb_mm_range (mm/pgtable-generic.c:203, arch/x86/mm/tlb.c:1083)"
                    .to_owned(),
            },
        ],
    }
}

/// `in_walk`: one bracket per THP (6.16+), so no overlapping pair.
fn doubles(n: u64, in_walk: bool) -> DoubleNotificationTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = DoubleSource::new;
    let thp = PMD_BYTES as u64;
    DoubleNotificationTruth {
        sources: vec![
            if in_walk {
                src(
                    DoubleKind::OverlappingBrackets,
                    0,
                    0,
                    None,
                    "one bracket per THP: the split happens inside try_to_migrate_one's",
                    "6.16+ try_to_migrate_one → split_huge_pmd_locked in the page walk",
                )
            } else {
                src(
                    DoubleKind::OverlappingBrackets,
                    n,
                    n * thp,
                    None,
                    "try_to_migrate_one's bracket [A, A+2M) inside the split's [A, A+2M), same write",
                    "split_huge_pmd_address(freeze) bracket, then try_to_migrate_one's own (one split_huge_page)",
                )
            },
            src(
                DoubleKind::AvoidedOnlyEnd,
                n,
                0,
                Some(Old),
                "the split bracket ends with mmu_notifier_invalidate_range_only_end",
                "6.1 mm/huge_memory.c:2358 (__split_huge_pmd)",
            ),
            src(DoubleKind::AvoidedOnlyEnd, 0, 0, Some(New), "no _only_end on 6.6+", "6.12 mm/huge_memory.c:2977"),
            src(
                DoubleKind::EndAfterInLock,
                0,
                0,
                None,
                "no ->invalidate_range under the page-table lock: the walk finds only migration entries",
                "6.1 try_to_migrate_one: page_vma_mapped_walk without PVMW_MIGRATION",
            ),
            src(DoubleKind::EndThenGather, 0, 0, Some(Old), "no TLB gather", "split_huge_pages_pid"),
            src(DoubleKind::EndThenGather, 0, 0, Some(New), "no _end callback on 6.6+", "mn_hlist_invalidate_end"),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(New),
                "one call per split, and no subscriber implements arch_invalidate_secondary_tlbs",
                "KVM's mmu_notifier_ops (6.12 virt/kvm/kvm_main.c:917)",
            ),
        ],
    }
}
