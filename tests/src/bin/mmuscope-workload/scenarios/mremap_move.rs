//! `mremap-move`: N × `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)` of 80 written small pages that straddle a PMD
//! boundary `B` — 16 pages below it, 64 above — to a reserved slot at the same offset from another PMD boundary.
//! Regions, slots and addresses are all made before the subscriber; each source range and each slot is a
//! `MADV_NOHUGEPAGE` VMA of its own between `PROT_NONE` guards (so no munmap below splits a VMA, which at an address
//! that is not PMD-aligned opens a THP-split bracket even with no THP: `__split_vma → vma_adjust_trans_huge →
//! split_huge_pmd_if_needed → __split_huge_pmd`, 6.12 mm/huge_memory.c:2964-2977, :2991).
//!
//! Each mremap opens three `MMU_NOTIFY_UNMAP` brackets on the mm, in this order:
//! 1. the slot (a never-touched VMA) is unmapped first (`MREMAP_FIXED`: `mremap_to → do_munmap(new_addr)`,
//!    6.12 mm/mremap.c:993, 6.1 :878) → `unmap_vmas`, over the 80 slot pages, which map nothing;
//! 2. `move_vma → move_page_tables` (6.12 mm/mremap.c:608-675, 6.1 :531-596) over `[B-16p, B+64p)`. No realignment to
//!    the PMD below (6.12 `try_realign_addr → can_align_down`, :517-540: the guard below is in the PMD the move would align down to),
//!    so the walk takes two extents split at `B` (`get_extent`): `move_ptes` of 16 pages, then of 64, each ending
//!    with `flush_tlb_range(vma, old_end - len, old_end)` since it moved present PTEs (:227; 6.1 :218);
//! 3. `move_vma → do_vmi_munmap(old_addr, old_len)` (6.12 :867, 6.1 `do_munmap` :761) → `unmap_vmas` over the same
//!    `[B-16p, B+64p)`, whose PTEs are none by now; the page tables stay (the guards' PMDs share them), so
//!    `free_pgtables` frees none and the gather has nothing to flush.
//!
//! Bracket 3 lies inside bracket 2 in the same system call: one `overlapping_brackets` double of 80 pages per
//! mremap, on both generations.
//!
//! Secondary-TLB calls per mremap:
//! * 6.6+ (6.12): both flushes of bracket 2, nothing else. `flush_tlb_mm_range` (arch/x86/mm/tlb.c:1043-1084) keeps
//!   16 pages as a range (≤ `tlb_single_page_flush_ceiling` = 33, :998) and widens 64 to `(0, ~0)` (:1054-1058): a
//!   range call of 16 pages, then a whole-mm call, in one bracket. The whole-mm call overlaps the range recorded
//!   before it: one `overlapping_secondary_tlb` double whose redundant bytes are the 16 pages. Only with the test
//!   module's secondary-TLB subscriber (`--subscriber sectlb`): KVM implements neither call, so with KVM alone the
//!   agent sees no call and no such double (`subscriber::finish`).
//! * pre-6.6 (6.1): `flush_tlb_range` calls no notifier; each bracket's plain `_end` calls `->invalidate_range` over
//!   its own range (mm/mmu_notifier.c:575-576): three bracket calls of 80 pages. None in the page-table lock, and
//!   no gather flush after them: no `end_after_in_lock`, no `end_then_gather`.

use anyhow::{Context, Result};
use mmuscope_tests::truth::{
    BracketSource, Cause, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth, InvalidationTruth,
    MremapMoveParams, NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, TlbContext,
    TlbScope,
};

use crate::cgroups;
use crate::cli::MremapMoveArgs;
use crate::kernel_api;
use crate::region::{AnonRegion, Thp, page_size};
use crate::subscriber::{self, Subscribed};
use crate::thp::PMD_BYTES;

pub const NAME: &str = "mremap-move";
/// Pages moved below and above the PMD boundary: 16 ≤ 33 stay a range, 64 > 33 become a whole-mm flush on x86.
const BELOW: usize = 16;
const ABOVE: usize = 64;
/// Each source VMA and each slot: two PMDs, the moved range around the boundary between them.
const SPAN: usize = 2 * PMD_BYTES;
// x86's `tlb_single_page_flush_ceiling` (33): the lower extent stays a range, the upper one becomes whole-mm; both
// fit in one PMD.
const _: () = assert!(BELOW <= 33 && ABOVE > 33 && (BELOW + ABOVE) * 4096 < PMD_BYTES);

pub fn run(args: &MremapMoveArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let n = args.iterations as usize;
    let page = page_size()?;
    let (below, moved) = (BELOW * page, (BELOW + ABOVE) * page);
    // Declared before the subscriber, so on an early return it goes first (locals drop in reverse order).
    let mut regions = Vec::with_capacity(2 * n);
    let mut plan = Vec::with_capacity(n);
    for i in 0..n {
        let source = AnonRegion::map_isolated(SPAN, PMD_BYTES, Thp::Never).with_context(|| format!("source {i}"))?;
        let slot = AnonRegion::map_isolated(SPAN, PMD_BYTES, Thp::Never).with_context(|| format!("slot {i}"))?;
        let (from, to) = (source.addr() + (PMD_BYTES - below) as u64, slot.addr() + (PMD_BYTES - below) as u64);
        for p in 0..BELOW + ABOVE {
            source.touch((PMD_BYTES - below) / page + p);
        }
        // The moved range and the slot become VMAs of their own between PROT_NONE guards (no merge with them), so
        // neither munmap splits a VMA: a split at an address that is not PMD-aligned opens a THP-split bracket
        // (`__split_vma → vma_adjust_trans_huge → split_huge_pmd_if_needed`) even where no THP is mapped.
        for r in [&source, &slot] {
            guard(r.addr(), PMD_BYTES - below)?;
            guard(r.addr() + (PMD_BYTES - below + moved) as u64, SPAN - (PMD_BYTES - below + moved))?;
        }
        plan.push((from, to));
        regions.push(source);
        regions.push(slot);
    }
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    let guest = Subscribed::over(&args.subscriber, memory)?;
    let vms = guest.vms();
    // --- notifier registered: no allocation, free, print or other mapping change until teardown ---
    let exercised = plan.iter().try_for_each(|&(from, to)| move_range(from, to, moved));
    let teardown = guest.teardown();
    // --- notifier gone ---
    exercised.context("mremap(MREMAP_MAYMOVE | MREMAP_FIXED)")?;
    let received = teardown?;
    drop(regions);
    eprintln!("mmuscope-workload: {NAME}: {n} ranges of {moved} bytes moved across a PMD boundary, subscriber gone");

    let n = args.iterations;
    let src = |cause: &str, path: &str| {
        BracketSource::new(NotifyEvent::Unmap, n, vms, cause, path).with_causes(Cause::Mremap, None)
    };
    let invalidations = InvalidationTruth::from_sources(vec![
        src(
            "MREMAP_FIXED unmaps the slot first",
            "mremap_to → do_munmap(new_addr) (6.12 mm/mremap.c:993, 6.1 :878) → unmap_vmas",
        ),
        src("the page-table move", "move_vma → move_page_tables (6.12 mm/mremap.c:608-675, 6.1 :531-596)"),
        src(
            "the moved-from range is unmapped",
            "move_vma → do_vmi_munmap(old_addr) (6.12 mm/mremap.c:867; 6.1 do_munmap :761) → unmap_vmas",
        ),
    ]);
    let params = MremapMoveParams { iterations: n, moved_bytes: moved as u64, below_boundary_bytes: below as u64 };
    let mut truth = GroundTruth::new(ScenarioParams::MremapMove(params), cgroups, vms, invalidations);
    truth.kernel_api = kernel_api;
    truth.double_notifications = Some(doubles(n, below as u64, moved as u64));
    subscriber::finish(&mut truth, secondary_tlb(n, below as u64, moved as u64), received)?;
    Ok(truth)
}

/// `mprotect(PROT_NONE)` of `[addr, addr + len)`, inside one of our regions.
fn guard(addr: u64, len: usize) -> std::io::Result<()> {
    // SAFETY: the range lies inside a mapping of ours that nothing accesses.
    if unsafe { libc::mprotect(addr as *mut libc::c_void, len, libc::PROT_NONE) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn move_range(from: u64, to: u64, len: usize) -> std::io::Result<()> {
    let flags = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    // SAFETY: [from, from+len) lies in a mapping of ours that nothing references; [to, to+len) in the slots'
    // reservation, which MREMAP_FIXED replaces.
    let p = unsafe { libc::mremap(from as *mut libc::c_void, len, len, flags, to as *mut libc::c_void) };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if p as u64 != to {
        return Err(std::io::Error::other(format!("mremap moved to {:#x}, not {to:#x}", p as u64)));
    }
    Ok(())
}

/// Per generation, context and scope, for `n` moves (see the module docs).
fn secondary_tlb(n: u64, below: u64, moved: u64) -> SecondaryTlbTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = |api, context, scope, count: u64, bytes: u64, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, context, Some(scope), count, bytes, cause, kernel_path)
    };
    SecondaryTlbTruth {
        sources: vec![
            src(
                Old,
                TlbContext::Bracket,
                TlbScope::Range,
                3 * n,
                3 * n * moved,
                "each of the three brackets' plain _end calls ->invalidate_range over its range",
                "6.1 mm/mmu_notifier.c:575-576",
            ),
            src(Old, TlbContext::Gather, TlbScope::Range, 0, 0, "no PTE cleared in either unmap", "unmap_vmas"),
            src(
                New,
                TlbContext::Bracket,
                TlbScope::Range,
                n,
                n * below,
                "move_ptes flushes the 16 pages below the boundary: a range",
                "6.12 mm/mremap.c:227 → arch/x86/mm/tlb.c:1083",
            ),
            src(
                New,
                TlbContext::Bracket,
                TlbScope::FullMm,
                n,
                0,
                "move_ptes flushes the 64 pages above it: more than 33, widened to (0, ~0)",
                "6.12 mm/mremap.c:227 → arch/x86/mm/tlb.c:998, :1054-1058, :1083",
            ),
            src(New, TlbContext::Gather, TlbScope::Range, 0, 0, "no PTE cleared in either unmap", "unmap_vmas"),
        ],
    }
}

fn doubles(n: u64, below: u64, moved: u64) -> DoubleNotificationTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let src = DoubleSource::new;
    DoubleNotificationTruth {
        sources: vec![
            src(
                DoubleKind::OverlappingBrackets,
                n,
                n * moved,
                None,
                "the moved-from range is unmapped inside the page-table move's range, same mremap",
                "move_vma: move_page_tables' bracket, then do_vmi_munmap's unmap_vmas bracket (6.12 mm/mremap.c:867)",
            ),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                n,
                n * below,
                Some(New),
                "the whole-mm flush of the 64 pages after the range flush of the 16, in one bracket",
                "6.12 move_page_tables → move_ptes × 2 (mm/mremap.c:227), the second widened by flush_tlb_mm_range \
                 (arch/x86/mm/tlb.c:1054-1058)",
            ),
            src(
                DoubleKind::OverlappingSecondaryTlb,
                0,
                0,
                Some(Old),
                "one call per bracket, _end's",
                "6.1 mm/mmu_notifier.c:575-576",
            ),
            src(DoubleKind::EndAfterInLock, 0, 0, None, "no call in the page-table lock", "6.1 move_ptes"),
            src(DoubleKind::EndThenGather, 0, 0, None, "no gather flush", "nothing cleared in either unmap"),
            src(DoubleKind::AvoidedOnlyEnd, 0, 0, None, "plain _end everywhere", "unmap_vmas, move_page_tables"),
        ],
    }
}
