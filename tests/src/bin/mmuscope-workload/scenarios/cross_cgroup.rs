//! `cross-cgroup --regions N [--zram-mib M]`: this process (A, cgroup X) owns N small-page regions (2 MiB each to
//! collapse, 1 MiB each to page out) and a KVM VM; a second process (B, `mmuscope-workload cross-cgroup-initiator`, in a fresh sibling cgroup Y) advises them
//! with one `process_madvise(pidfd_A, iov[N], advice)`. Every bracket that call opens is on A's mm, run by B: owner
//! X, initiator Y.
//!
//! Which advice: the one of these that `process_madvise` takes here ([`probe_advice`]). 6.1 and 6.12 take
//! `MADV_COLD`, `MADV_PAGEOUT`, `MADV_WILLNEED` and `MADV_COLLAPSE` (`process_madvise_behavior_valid`,
//! mm/madvise.c:1195 / :1229); 5.10 only `MADV_COLD` and `MADV_PAGEOUT` (5.10.262 mm/madvise.c:989-998).
//! * `MADV_COLD` never invalidates: it ages PTEs (`pte_mkold`/`clear_young_dirty_ptes`) and deactivates folios
//!   without any bracket (no mmu_notifier call in mm/madvise.c besides `madvise_free_single_vma`).
//! * `MADV_COLLAPSE` (6.1+) works without swap and regardless of the THP sysfs mode: `madvise_collapse`
//!   (`lru_add_drain_all` first, 6.1 mm/khugepaged.c:2676, 6.12 :2751) `→ hpage_collapse_scan_pmd →
//!   collapse_huge_page`, whose single bracket is `mmu_notifier_range_init(MMU_NOTIFY_CLEAR, mm, address, address +
//!   HPAGE_PMD_SIZE)` around `pmdp_collapse_flush` (6.1 :1049-1067, 6.12 :1168-1183). The choice wherever it exists.
//! * `MADV_PAGEOUT` (5.10) invalidates only the pages reclaim really unmaps: anonymous pages need swap
//!   (`add_to_swap` fails without it), so the scenario takes the first active swap area or, with `--zram-mib`, makes
//!   a temporary zram device, as `swap-out` does. `madvise_pageout` (5.10.262 mm/madvise.c:549-569) drains the LRU-add
//!   batch of B's CPU, opens a TLB gather over each VMA, ages every young PTE, `reclaim_pages → shrink_page_list →
//!   try_to_unmap → try_to_unmap_one`: one `MMU_NOTIFY_CLEAR` bracket per page, whose PTE becomes a swap entry;
//!   `tlb_end_vma` flushes each VMA's gather (include/asm-generic/tlb.h:519-531). Every figure is `swap-out`'s
//!   (its module docs: per page an in-lock `->invalidate_range` and the plain `_end`'s, one `end_after_in_lock`;
//!   per region one gather call over its 1 MiB after the brackets, one `end_then_gather`), with one gather per
//!   region instead of one in all. A wrote every page (young, dirty) pinned to one CPU and drains that CPU's batch,
//!   so every page is on the LRU when B walks; the truth counts the pages whose pagemap entry is a swap entry
//!   afterwards and the scenario fails unless that is all of them.
//!
//! Set-up for `MADV_COLLAPSE`, before the VM, so that B's collapse is the only one: each region is 2 MiB-aligned and
//! isolated, written page by page while `MADV_NOHUGEPAGE` (small pages even with THP `always`), then `MADV_COLD`
//! (PTEs old, folios unreferenced) and `MADV_HUGEPAGE` (clears `VM_NOHUGEPAGE`, which `MADV_COLLAPSE` requires).
//! khugepaged may now scan the region, but it refuses regions without young or referenced pages
//! (`SCAN_LACK_REFERENCED_PAGE`, 6.1 :1289, 6.12 :1417) while `MADV_COLLAPSE` ignores that test; nothing touches the
//! pages afterwards. Regions that were already PMD-mapped would make `MADV_COLLAPSE` succeed without a bracket
//! (`SCAN_PMD_MAPPED`), so the scenario checks `AnonHugePages` is 0 before and 2048 kB after, and that B advised every
//! byte.
//!
//! Collapse's secondary-TLB calls: one per collapse, in its bracket: pre-6.6 the plain `_end`'s `->invalidate_range`
//! over the 2 MiB; 6.6+ `pmdp_collapse_flush → flush_tlb_range` over 512 pages, whose scope x86 decides by kernel
//! series (`kernel_api::flush_scope_above_ceiling`). None in a gather context (there is no gather window).
//!
//! Collapse's double notifications: none on either generation. Pre-6.6 the collapse bracket's only secondary-TLB
//! call is the `->invalidate_range` of its plain `_end` (`pmdp_collapse_flush` → `flush_tlb_range` calls no notifier
//! there), and no TLB-gather window surrounds it; on 6.6+ KVM implements no `arch_invalidate_secondary_tlbs`.
//!
//! B is spawned (posix_spawn/vfork, no copy-on-write sharing of A's pages) before the VM exists, enters Y, opens a
//! pidfd for A and reports ready; A then creates the VM and sends `go`; B reports the bytes advised; A destroys the
//! VM. Y stays behind like X, for the scrape; `cross_cgroup.initiator_cgroups` names it for clean-up.

use mmuscope_tests::truth::Cause;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use anyhow::{Context, Result, bail};
use mmuscope_tests::cgroup::CgroupPlacement;
use mmuscope_tests::truth::{
    BracketSource, CrossCgroupParams, CrossCgroupTruth, DoubleKind, DoubleNotificationTruth, DoubleSource, GroundTruth,
    InvalidationTruth, NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, SwapTruth,
    TlbContext, TlbScope,
};
use serde::{Deserialize, Serialize};

use super::swap_out;
use crate::cgroups;
use crate::cli::{CgroupArgs, CrossAdvice, CrossCgroupArgs, InitiatorArgs, Ranges};
use crate::kernel_api;
use crate::pagemap::Pagemap;
use crate::region::{AnonRegion, Thp, page_size};
use crate::subscriber;
use crate::sys::{errno_name, pidfd_open, pin_to_current_cpu, possible_cpus, process_madvise};
use crate::thp::{self, PMD_BYTES};
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "cross-cgroup";
pub const INITIATOR: &str = "cross-cgroup-initiator";
/// `MADV_COLLAPSE` (include/uapi/asm-generic/mman-common.h, since 6.1).
const MADV_COLLAPSE: libc::c_int = 25;
/// A region to page out: 256 pages of 4 KiB, one bracket each (as `swap-out --pages 256`; the agent's per-process
/// slow-bracket view, which the guest check compares, holds at most 1000 brackets).
const PAGEOUT_BYTES: usize = 1 << 20;
/// The longest reply line B sends (`ok <bytes>` / `err <text>`), read into a stack buffer while the VM exists.
const REPLY_MAX: usize = 256;

/// B's first line on stdout.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    pid: u32,
    cgroups: CgroupPlacement,
}

pub fn run(args: &CrossCgroupArgs) -> Result<GroundTruth> {
    let kernel_api = kernel_api::detect();
    let advice = probe_advice()?;
    // Before the cgroup, so that a refusal leaves nothing behind. Dropped last: swapoff after the memory is gone.
    let swap = match advice {
        CrossAdvice::Pageout => Some(swap_out::swap_area(NAME, args.zram_mib)?),
        CrossAdvice::Collapse => None,
    };
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let n = args.regions;
    let page = page_size()?;
    if advice == CrossAdvice::Pageout {
        // Written pages wait in this CPU's LRU-add batch; B's lru_add_drain() drains its own CPU's.
        pin_to_current_cpu()?;
    }
    let region_bytes = match advice {
        CrossAdvice::Collapse => PMD_BYTES,
        CrossAdvice::Pageout => PAGEOUT_BYTES,
    };
    let mut regions = Vec::with_capacity(n as usize);
    for i in 0..n {
        let region = match advice {
            CrossAdvice::Collapse => prepare_region(),
            CrossAdvice::Pageout => prepare_pageout_region(),
        };
        regions.push(region.with_context(|| format!("preparing region {i}"))?);
    }
    if advice == CrossAdvice::Pageout {
        // Drains this CPU's LRU-add batch, so that every written page is on the LRU: an empty region has nothing
        // to age (5.10.262 mm/madvise.c:511).
        AnonRegion::map(page)
            .and_then(|r| r.advise(libc::MADV_COLD))
            .context("madvise(MADV_COLD) to drain the LRU-add batch")?;
    }
    let ranges = Ranges(regions.iter().map(|r| (r.addr(), r.len() as u64)).collect());
    let (mut child, ready, mut to_b, mut from_b) =
        spawn_initiator(&ranges, advice, &args.cgroup, &cgroups::initiator_leaf(&cgroups))?;
    if advice == CrossAdvice::Collapse {
        compact_memory();
    }
    let pagemap = Pagemap::open_self(page)?;
    let kvm = Kvm::open()?;
    let memory = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).context("mapping guest memory")?;
    let guest = GuestVm::over(&kvm, memory, 1)?;
    // --- KVM notifier registered: no allocation, free, print or mapping change until teardown ---
    let mut reply = [0u8; REPLY_MAX];
    let exchanged = exchange(&mut to_b, &mut from_b, &mut reply);
    let teardown = guest.teardown();
    // --- notifier gone ---
    let len = exchanged.context("talking to the initiator process")?;
    teardown?;
    drop(to_b);
    let status = child.wait().context("waiting for the initiator process")?;
    let advised = parse_reply(&reply[..len])?;
    if !status.success() {
        bail!("the initiator process exited with {status}");
    }
    let wanted = n * region_bytes as u64;
    if advised != wanted {
        bail!("process_madvise({}) advised {advised} of {wanted} bytes; truth unknown", advice.name());
    }
    // Brackets on this mm: one per collapsed region, or one per page reclaimed.
    let brackets = match advice {
        CrossAdvice::Collapse => {
            for r in &regions {
                let kib = thp::pmd_mapped_kib(r.addr())?;
                if kib != PMD_BYTES as u64 / 1024 {
                    bail!("region {:#x} is not PMD-mapped after MADV_COLLAPSE (AnonHugePages {kib} kB)", r.addr());
                }
            }
            n
        }
        CrossAdvice::Pageout => {
            let mut swapped = 0;
            for r in &regions {
                swapped += pagemap.entries(r.addr(), r.pages())?.iter().filter(|e| e.swapped()).count() as u64;
            }
            let pages = wanted / page as u64;
            if swapped != pages {
                bail!(
                    "only {swapped} of {pages} pages were swapped out (swap full? pages not on the LRU?); truth unknown"
                );
            }
            swapped
        }
    };
    drop(regions);
    let swap_device = swap.map(|(zram, device)| {
        drop(zram);
        device
    });
    eprintln!(
        "mmuscope-workload: {NAME}: pid {} advised {n} regions of pid {} ({}): {brackets} brackets",
        ready.pid,
        std::process::id(),
        advice.name()
    );

    let source = match advice {
        CrossAdvice::Collapse => BracketSource::new(
            NotifyEvent::Clear,
            n,
            1,
            "process_madvise(MADV_COLLAPSE) from another process in another cgroup, one 2 MiB region",
            "madvise_collapse → hpage_collapse_scan_pmd → collapse_huge_page: MMU_NOTIFY_CLEAR [A, A+2M) around \
             pmdp_collapse_flush (6.1 mm/khugepaged.c:1049-1067, 6.12 :1168-1183)",
        )
        .with_causes(Cause::Madvise, None),
        CrossAdvice::Pageout => BracketSource::new(
            NotifyEvent::Clear,
            brackets,
            1,
            "process_madvise(MADV_PAGEOUT) from another process in another cgroup, one written page moved to swap",
            "madvise_pageout → madvise_cold_or_pageout_pte_range → reclaim_pages → shrink_page_list → try_to_unmap → \
             try_to_unmap_one: MMU_NOTIFY_CLEAR [addr, addr+4K) (5.10.262 mm/madvise.c:549-569, mm/rmap.c:1420-1430)",
        )
        .with_causes(Cause::Madvise, Some(Cause::Reclaim)),
    };
    let invalidations = InvalidationTruth::from_sources(vec![source.initiated_by(ready.pid)]);
    let params = CrossCgroupParams { regions: n, region_bytes: region_bytes as u64, advice: advice.name().to_owned() };
    let mut truth = GroundTruth::new(ScenarioParams::CrossCgroup(params), cgroups, 1, invalidations);
    truth.kernel_api = kernel_api;
    truth.cross_cgroup = Some(CrossCgroupTruth {
        initiator_pid: ready.pid,
        initiator_cgroups: Some(ready.cgroups),
        invalidations: brackets,
        initiator_kind: "other_cgroup".to_owned(),
    });
    if let Some(swap_device) = swap_device {
        // As `swap-out`, with one gather flush per region (each its own VMA).
        let (pages, page) = (wanted / page as u64, page as u64);
        truth.swap = Some(SwapTruth { advised_pages: pages, swapped_pages: brackets, swap_device });
        truth.double_notifications = Some(swap_out::doubles(brackets, page, n));
        let one_cpu = possible_cpus()? == 1;
        truth.secondary_tlb = Some(subscriber::kvm_only(swap_out::secondary_tlb(brackets, page, one_cpu, n)));
    } else {
        truth.double_notifications = Some(no_doubles());
        truth.secondary_tlb = Some(subscriber::kvm_only(secondary_tlb(n)));
    }
    Ok(truth)
}

/// Which advice B gives: `MADV_COLLAPSE` where `process_madvise` takes it (6.1+), else `MADV_PAGEOUT` (5.10.262's
/// `process_madvise_behavior_valid` takes only `MADV_COLD` and `MADV_PAGEOUT`, mm/madvise.c:989-998). Asked of the
/// kernel with this process's own pidfd and no range at all: the advice is checked before any range is read
/// (mm/madvise.c:1203), and an empty vector advises nothing. The advice a process may give itself is a superset of
/// what it may give another, and `MADV_COLLAPSE` became valid for both in 6.1; a kernel that said yes here and no to B
/// would fail B's call with `EINVAL`, loudly.
fn probe_advice() -> Result<CrossAdvice> {
    let me = pidfd_open(std::process::id())?;
    match process_madvise(&me, &[], MADV_COLLAPSE) {
        Ok(_) => Ok(CrossAdvice::Collapse),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(CrossAdvice::Pageout),
        Err(e) => bail!("probing process_madvise(MADV_COLLAPSE) with no range: {}", errno_name(&e)),
    }
}

impl CrossAdvice {
    /// The `MADV_*` name in lower case without the prefix.
    fn name(self) -> &'static str {
        match self {
            Self::Collapse => "collapse",
            Self::Pageout => "pageout",
        }
    }

    fn raw(self) -> libc::c_int {
        match self {
            Self::Collapse => MADV_COLLAPSE,
            Self::Pageout => libc::MADV_PAGEOUT,
        }
    }
}

/// One secondary-TLB call per collapse, in its bracket; no TLB-gather window (so no gather call).
fn secondary_tlb(collapses: u64) -> SecondaryTlbTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let region = PMD_BYTES as u64;
    let src = |api, scope: Option<TlbScope>, cause: &str, kernel_path: &str| {
        SecondaryTlbSource::exact(api, TlbContext::Bracket, scope, collapses, collapses * region, cause, kernel_path)
    };
    SecondaryTlbTruth {
        sources: vec![
            src(
                Old,
                Some(TlbScope::Range),
                "the collapse bracket's plain _end calls ->invalidate_range over the 2 MiB",
                "6.1 mm/khugepaged.c:1067 mmu_notifier_invalidate_range_end → mm/mmu_notifier.c:575",
            ),
            src(
                New,
                kernel_api::flush_scope_above_ceiling(),
                "pmdp_collapse_flush → flush_tlb_range over 512 pages (above x86's 33-page ceiling): (0, ~0) on 6.12, \
                 the range on 7.2 (keyed by series; no scope on another series)",
                "6.12 mm/khugepaged.c:1183 → mm/pgtable-generic.c pmdp_collapse_flush → arch/x86/mm/tlb.c:1054-1058, \
                 :1083",
            ),
        ],
    }
}

fn no_doubles() -> DoubleNotificationTruth {
    let src = DoubleSource::new;
    let none = |kind, api, cause: &str, path: &str| src(kind, 0, 0, api, cause, path);
    DoubleNotificationTruth {
        sources: vec![
            none(DoubleKind::EndAfterInLock, None, "no in-lock call", "6.1 pmdp_collapse_flush → flush_tlb_range"),
            none(
                DoubleKind::EndThenGather,
                None,
                "no TLB-gather window around the collapse",
                "collapse_huge_page uses no mmu_gather",
            ),
            none(
                DoubleKind::OverlappingSecondaryTlb,
                Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs),
                "no subscriber implements arch_invalidate_secondary_tlbs",
                "KVM's mmu_notifier_ops (6.12 virt/kvm/kvm_main.c:917)",
            ),
            none(DoubleKind::OverlappingBrackets, None, "one bracket per disjoint 2 MiB region", "collapse_huge_page"),
        ],
    }
}

/// Compacts all zones once, before the VM exists (so without brackets). B's collapse allocates a huge page; on a
/// fragmented host that allocation compacts directly, and migrating any page of A's then opens one more bracket on
/// A's mm in B's system call (seen once on a loaded host: 3 brackets for 2 regions). Free huge pages made here make
/// that unlikely; it cannot be excluded, so a failure names it.
fn compact_memory() {
    if let Err(e) = std::fs::write("/proc/sys/vm/compact_memory", "1") {
        eprintln!(
            "mmuscope-workload: {NAME}: could not compact memory first ({e}); a direct compaction may add a bracket"
        );
    }
}

/// An isolated region of [`PAGEOUT_BYTES`] in small, written pages for `MADV_PAGEOUT`: present, dirty and young (the
/// pageout walk ages every one, as in `swap-out`), never a THP.
fn prepare_pageout_region() -> Result<AnonRegion> {
    let r = AnonRegion::map_isolated(PAGEOUT_BYTES, PMD_BYTES, Thp::Never)?;
    r.touch_all();
    Ok(r)
}

/// An isolated 2 MiB region of 512 small, written, cold pages that `MADV_COLLAPSE` may collapse.
fn prepare_region() -> Result<AnonRegion> {
    let r = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never)?;
    r.touch_all();
    r.advise(libc::MADV_COLD).context("madvise(MADV_COLD)")?;
    r.advise(libc::MADV_HUGEPAGE).context("madvise(MADV_HUGEPAGE)")?;
    let kib = thp::pmd_mapped_kib(r.addr())?;
    if kib != 0 {
        bail!("region {:#x} is already PMD-mapped ({kib} kB)", r.addr());
    }
    Ok(r)
}

fn spawn_initiator(
    ranges: &Ranges,
    advice: CrossAdvice,
    cgroup: &CgroupArgs,
    name: &str,
) -> Result<(Child, Ready, ChildStdin, ChildStdout)> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut child = Command::new(&exe)
        .args([INITIATOR, "--target-pid", &std::process::id().to_string(), "--ranges", &ranges.to_arg()])
        .args(["--advice", advice.name()])
        .args(["--cgroup-parent", &cgroup.cgroup_parent, "--cgroup-name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {} {INITIATOR}", exe.display()))?;
    let to_b = child.stdin.take().expect("stdin is piped");
    let mut from_b = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    from_b.read_line(&mut line).context("reading the initiator's ready line")?;
    let ready: Ready = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let _ = child.wait();
            bail!("the initiator process did not get ready ({e}; it said {line:?})");
        }
    };
    // B writes nothing more until `go`, so the reader holds no buffered bytes.
    Ok((child, ready, to_b, from_b.into_inner()))
}

/// Sends `go` and reads B's one-line reply into `reply` (no allocation). Returns the reply's length.
fn exchange(to_b: &mut ChildStdin, from_b: &mut ChildStdout, reply: &mut [u8; REPLY_MAX]) -> std::io::Result<usize> {
    to_b.write_all(b"go\n")?;
    to_b.flush()?;
    let mut len = 0;
    while len < reply.len() {
        let n = from_b.read(&mut reply[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if reply[..len].contains(&b'\n') {
            break;
        }
    }
    Ok(len)
}

/// `ok <bytes>` → bytes; `err <text>` → the error.
fn parse_reply(reply: &[u8]) -> Result<u64> {
    let text = String::from_utf8_lossy(reply);
    let line = text.trim_end();
    if let Some(n) = line.strip_prefix("ok ") {
        return n.parse().with_context(|| format!("initiator reply {line:?}"));
    }
    match line.strip_prefix("err ") {
        Some(e) => bail!("the initiator's process_madvise failed: {e}"),
        None => bail!("unexpected initiator reply {line:?}"),
    }
}

/// B: enter cgroup Y, open a pidfd for A, say ready, wait for `go`, advise, reply.
pub fn initiator(args: &InitiatorArgs) -> Result<()> {
    let placement = cgroups::enter_fresh(INITIATOR, &args.cgroup)?;
    let pidfd = pidfd_open(args.target_pid)?;
    let iovs: Vec<libc::iovec> = args
        .ranges
        .0
        .iter()
        .map(|&(a, l)| libc::iovec { iov_base: a as *mut libc::c_void, iov_len: l as usize })
        .collect();
    let mut out = std::io::stdout().lock();
    let ready = Ready { pid: std::process::id(), cgroups: placement };
    writeln!(out, "{}", serde_json::to_string(&ready).context("encoding the ready line")?)?;
    out.flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).context("waiting for go")?;
    if go.trim() != "go" {
        bail!("expected go from the scenario, got {go:?}");
    }
    let reply = match process_madvise(&pidfd, &iovs, args.advice.raw()) {
        Ok(n) => format!("ok {n}"),
        Err(e) => format!("err process_madvise({}): {}", args.advice.name(), errno_name(&e)),
    };
    writeln!(out, "{reply}")?;
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"ok 2097152\n").unwrap(), 2 << 20);
        let e = parse_reply(b"err process_madvise(MADV_COLLAPSE): EINVAL (Invalid argument)\n").unwrap_err();
        assert!(e.to_string().contains("EINVAL"));
        assert!(parse_reply(b"").is_err());
        assert!(parse_reply(b"ok many\n").is_err());
    }
}
