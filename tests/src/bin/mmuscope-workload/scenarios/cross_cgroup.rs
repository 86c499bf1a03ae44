//! `cross-cgroup --regions N`: this process (A, cgroup X) owns N small-page 2 MiB regions and a KVM VM; a second
//! process (B, `mmuscope-workload cross-cgroup-initiator`, in a fresh sibling cgroup Y) collapses them into THPs
//! with one `process_madvise(pidfd_A, iov[N], MADV_COLLAPSE)`. Every collapse is one `MMU_NOTIFY_CLEAR` bracket on
//! A's mm, run by B: owner X, initiator Y.
//!
//! Which advice: `process_madvise` accepts `MADV_COLD`, `MADV_PAGEOUT`, `MADV_WILLNEED` and `MADV_COLLAPSE` on both
//! 6.1 and 6.12 (`process_madvise_behavior_valid`, mm/madvise.c:1195 / :1229).
//! * `MADV_COLD` never invalidates: it ages PTEs (`pte_mkold`/`clear_young_dirty_ptes`) and deactivates folios
//!   without any bracket (no mmu_notifier call in mm/madvise.c besides `madvise_free_single_vma`).
//! * `MADV_PAGEOUT` invalidates only the pages reclaim really unmaps (`try_to_unmap_one`, one bracket per page):
//!   anonymous pages need swap (`add_to_swap` fails without it), so it is host-dependent; `swap-out` covers it.
//! * `MADV_COLLAPSE` works without swap and regardless of the THP sysfs mode: `madvise_collapse` (`lru_add_drain_all`
//!   first, 6.1 mm/khugepaged.c:2676, 6.12 :2751) `→ hpage_collapse_scan_pmd → collapse_huge_page`, whose single
//!   bracket is `mmu_notifier_range_init(MMU_NOTIFY_CLEAR, mm, address, address + HPAGE_PMD_SIZE)` around
//!   `pmdp_collapse_flush` (6.1 :1049-1067, 6.12 :1168-1183).
//!
//! Set-up before the VM, so that B's collapse is the only one: each region is 2 MiB-aligned and isolated, written
//! page by page while `MADV_NOHUGEPAGE` (small pages even with THP `always`), then `MADV_COLD` (PTEs old, folios
//! unreferenced) and `MADV_HUGEPAGE` (clears `VM_NOHUGEPAGE`, which `MADV_COLLAPSE` requires). khugepaged may now
//! scan the region, but it refuses regions without young or referenced pages (`SCAN_LACK_REFERENCED_PAGE`, 6.1
//! :1289, 6.12 :1417) while `MADV_COLLAPSE` ignores that test; nothing touches the pages afterwards. Regions that were
//! already PMD-mapped would make `MADV_COLLAPSE` succeed without a bracket (`SCAN_PMD_MAPPED`), so the scenario
//! checks `AnonHugePages` is 0 before and 2048 kB after, and that B advised every byte.
//!
//! Secondary-TLB calls: one per collapse, in its bracket: pre-6.6 the plain `_end`'s `->invalidate_range` over the
//! 2 MiB; 6.6+ `pmdp_collapse_flush → flush_tlb_range` over 512 pages, whose scope x86 decides by kernel series
//! (`kernel_api::flush_scope_above_ceiling`). None in a gather context (there is no gather window).
//!
//! Double notifications: none on either generation. Pre-6.6 the collapse bracket's only secondary-TLB call is
//! the `->invalidate_range` of its plain `_end` (`pmdp_collapse_flush` → `flush_tlb_range` calls no notifier there),
//! and no TLB-gather window surrounds it; on 6.6+ KVM implements no `arch_invalidate_secondary_tlbs`.
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
    InvalidationTruth, NotifyEvent, ScenarioParams, SecondaryTlbApi, SecondaryTlbSource, SecondaryTlbTruth, TlbContext,
    TlbScope,
};
use serde::{Deserialize, Serialize};

use crate::cgroups;
use crate::cli::{CgroupArgs, CrossCgroupArgs, InitiatorArgs, Ranges};
use crate::kernel_api;
use crate::region::{AnonRegion, Thp};
use crate::subscriber;
use crate::sys::{errno_name, pidfd_open, process_madvise};
use crate::thp::{self, PMD_BYTES};
use crate::vm::{GuestVm, Kvm};

pub const NAME: &str = "cross-cgroup";
pub const INITIATOR: &str = "cross-cgroup-initiator";
/// `MADV_COLLAPSE` (include/uapi/asm-generic/mman-common.h, since 6.1).
const MADV_COLLAPSE: libc::c_int = 25;
/// The longest reply line B sends (`ok <bytes>` / `err <text>`), read into a stack buffer while the VM exists.
const REPLY_MAX: usize = 256;

/// B's first line on stdout.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    pid: u32,
    cgroups: CgroupPlacement,
}

pub fn run(args: &CrossCgroupArgs) -> Result<GroundTruth> {
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    let kernel_api = kernel_api::detect();
    let n = args.regions;
    let mut regions = Vec::with_capacity(n as usize);
    for i in 0..n {
        regions.push(prepare_region().with_context(|| format!("preparing region {i}"))?);
    }
    let ranges = Ranges(regions.iter().map(|r| (r.addr(), r.len() as u64)).collect());
    let (mut child, ready, mut to_b, mut from_b) =
        spawn_initiator(&ranges, &args.cgroup, &cgroups::initiator_leaf(&cgroups))?;
    compact_memory();
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
    let wanted = n * PMD_BYTES as u64;
    if advised != wanted {
        bail!("process_madvise(MADV_COLLAPSE) advised {advised} of {wanted} bytes; truth unknown");
    }
    for r in &regions {
        let kib = thp::pmd_mapped_kib(r.addr())?;
        if kib != PMD_BYTES as u64 / 1024 {
            bail!("region {:#x} is not PMD-mapped after MADV_COLLAPSE (AnonHugePages {kib} kB)", r.addr());
        }
    }
    drop(regions);
    eprintln!("mmuscope-workload: {NAME}: pid {} collapsed {n} regions of pid {}", ready.pid, std::process::id());

    let invalidations = InvalidationTruth::from_sources(vec![
        BracketSource::new(
            NotifyEvent::Clear,
            n,
            1,
            "process_madvise(MADV_COLLAPSE) from another process in another cgroup, one 2 MiB region",
            "madvise_collapse → hpage_collapse_scan_pmd → collapse_huge_page: MMU_NOTIFY_CLEAR [A, A+2M) around \
             pmdp_collapse_flush (6.1 mm/khugepaged.c:1049-1067, 6.12 :1168-1183)",
        )
        .with_causes(Cause::Madvise, None)
        .initiated_by(ready.pid),
    ]);
    let params = CrossCgroupParams { regions: n, region_bytes: PMD_BYTES as u64, advice: "collapse".to_owned() };
    let mut truth = GroundTruth::new(ScenarioParams::CrossCgroup(params), cgroups, 1, invalidations);
    truth.kernel_api = kernel_api;
    truth.cross_cgroup = Some(CrossCgroupTruth {
        initiator_pid: ready.pid,
        initiator_cgroups: Some(ready.cgroups),
        invalidations: n,
        initiator_kind: "other_cgroup".to_owned(),
    });
    truth.double_notifications = Some(no_doubles());
    truth.secondary_tlb = Some(subscriber::kvm_only(secondary_tlb(n)));
    Ok(truth)
}

/// One secondary-TLB call per collapse, in its bracket; no TLB-gather window (so no gather call).
fn secondary_tlb(collapses: u64) -> SecondaryTlbTruth {
    use SecondaryTlbApi::{ArchInvalidateSecondaryTlbs as New, InvalidateRange as Old};
    let region = PMD_BYTES as u64;
    let src = |api, scope: Option<TlbScope>, cause: &str, kernel_path: &str| SecondaryTlbSource {
        api,
        context: TlbContext::Bracket,
        scope,
        count: collapses,
        count_max: None,
        bytes: (scope == Some(TlbScope::Range)).then_some(collapses * region),
        cause: cause.to_owned(),
        kernel_path: kernel_path.to_owned(),
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
    cgroup: &CgroupArgs,
    name: &str,
) -> Result<(Child, Ready, ChildStdin, ChildStdout)> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut child = Command::new(&exe)
        .args([INITIATOR, "--target-pid", &std::process::id().to_string(), "--ranges", &ranges.to_arg()])
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
    let reply = match process_madvise(&pidfd, &iovs, MADV_COLLAPSE) {
        Ok(n) => format!("ok {n}"),
        Err(e) => format!("err process_madvise(MADV_COLLAPSE): {}", errno_name(&e)),
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
