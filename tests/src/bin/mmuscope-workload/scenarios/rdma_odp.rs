//! `rdma-odp`: RDMA On-Demand Paging through soft-RoCE. A real driver's interval notifier: rxe's ODP memory region
//! (`drivers/infiniband/sw/rxe/rxe_odp.c`, 6.14+: `ib_umem_odp_get` → `mmu_interval_notifier_insert`, callback
//! `rxe_ib_invalidate_range`), faulted in by RDMA WRITE and READ on a loopback RC QP pair (`hmm_range_fault` in
//! `ib_umem_odp_map_dma_and_lock`), invalidated by madvise, mprotect and munmap between operations.
//!
//! The verbs run in a helper process (`tests/rdma/odp.c`, why C is said there) started in this scenario's cgroup:
//! its mm holds the interval, and it reports what it did. Here: the guest's soft-RoCE link (a `dummy` netdev with an
//! IPv4 address, `rdma link add rxe0 type rxe netdev …`), the helper, and the truth from its report.
//!
//! Truth (the helper's header gives the kernel paths): per round one CLEAR bracket (MADV_DONTNEED of one page of the
//! region) and two PROTECTION_VMA brackets (mprotect of the whole region read-only and back), then one UNMAP bracket
//! (munmap of the region while the MR exists); each intersects the interval, so each is an interval invalidation and
//! the only brackets that reach a subscriber (the mm has no classic notifier). The same calls on another region of
//! the same mm are misses: in no figure. No RDMA operation is in flight during an invalidation (each is waited for),
//! so no reader waits in `mmu_interval_read_begin` and `hmm_range_fault` never returns -EBUSY: both exactly 0.
//! `ib_umem_odp_map_dma_and_lock`'s read retries are inline (`mmu_interval_read_retry`) and not counted by the agent.
//!
//! `--concurrent`: also invalidations while the operations run (the helper's header says how). Each is a counted
//! MADV_DONTNEED of a page of R (a CLEAR bracket on the interval), so the invalidation figures stay exact; how many
//! of rxe's faults waited in `mmu_interval_read_begin` or got -EBUSY from `hmm_range_fault` is timing in the rxe
//! responder's work item, which the workload cannot know: the truth says so (`collisions_timed`) and the guest
//! check's trace reference counts them for the agent to equal.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};
use mmuscope_tests::truth::{
    BracketSource, Cause, GroundTruth, IntervalTruth, InvalidationTruth, NotifyEvent, RdmaOdpParams, ScenarioParams,
};

use crate::cgroups;
use crate::cli::RdmaOdpArgs;

pub const NAME: &str = "rdma-odp";
/// The soft-RoCE device and its netdev.
const RXE: &str = "rxe0";
const NETDEV: &str = "mmuscope-odp0";
const ADDRESS: &str = "10.99.0.1/24";

pub fn run(args: &RdmaOdpArgs) -> Result<GroundTruth> {
    soft_roce_link()?;
    let cgroups = cgroups::enter_fresh(NAME, &args.cgroup)?;
    // The helper inherits the cgroup; its mm is the one with the interval.
    let mut helper = Command::new(&args.helper);
    helper.arg(args.rounds.to_string()).stderr(Stdio::inherit()).stdout(Stdio::piped());
    if args.concurrent {
        helper.arg("--concurrent");
    }
    if args.agent.agent_url.is_some() {
        helper.arg("--wait").stdin(Stdio::piped());
    }
    let mut child = helper.spawn().with_context(|| format!("starting {}", args.helper.display()))?;
    let pid = child.id();
    if let Some(url) = &args.agent.agent_url {
        // The helper says `registered=1` once the ODP MR exists, then waits for a line on stdin.
        let mut stdout = BufReader::new(child.stdout.take().context("the helper's stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).context("reading the helper's registered line")?;
        ensure!(line.trim() == "registered=1", "the helper said {line:?} instead of registered=1");
        if let Err(e) = crate::agent::await_interval_callback_timed(url, pid) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        child.stdin.take().context("the helper's stdin")?.write_all(b"go\n").context("the helper's go-ahead")?;
        child.stdout = Some(stdout.into_inner());
    }
    let out = child.wait_with_output().context("waiting for the verbs helper")?;
    match out.status.code() {
        Some(0) => {}
        Some(3) => {
            bail!("the RDMA device has no On-Demand Paging for RC (rxe gained it in 6.14; see the helper's message)")
        }
        _ => bail!("the verbs helper failed ({})", out.status),
    }
    let report = parse_report(&String::from_utf8_lossy(&out.stdout))?;
    let get = |key: &str| report.get(key).copied().with_context(|| format!("the helper's report has no {key}"));
    let (clear, protect, unmap) = (get("clear")?, get("protection_vma")?, get("unmap")?);
    let (concurrent_clear, window_clear) = (get("concurrent_clear")?, get("window_clear")?);
    let writes = get("rdma_writes")?;
    ensure!(
        get("rounds")? == args.rounds
            && clear == args.rounds
            && protect == 2 * args.rounds
            && unmap == 1
            && get("concurrent")? == u64::from(args.concurrent)
            && window_clear == if args.concurrent { writes } else { 0 }
            && (args.concurrent || concurrent_clear == 0),
        "the helper reports {report:?} for {} rounds",
        args.rounds
    );
    eprintln!("mmuscope-workload: {NAME}: helper {pid} reported {report:?}");

    let interval = "(the ODP MR's interval: rxe_ib_invalidate_range)";
    let mut sources = vec![
        BracketSource::new(
            NotifyEvent::Clear,
            clear,
            0,
            &format!("madvise(MADV_DONTNEED) of one present page of the ODP region {interval}"),
            "madvise_dontneed_single_vma → zap_page_range_single(_batched) → __mmu_notifier_invalidate_range_start → \
             mn_itree_invalidate → rxe_ib_invalidate_range",
        )
        .with_causes(Cause::Madvise, None),
        BracketSource::new(
            NotifyEvent::ProtectionVma,
            protect,
            0,
            &format!("mprotect of the whole present 2 MiB ODP region, PROT_READ then PROT_READ|PROT_WRITE {interval}"),
            "mprotect_fixup → change_protection: the bracket opened lazily once per PUD/P4D range with a populated \
             entry (the region is one PMD with present pages); the protection changes every call",
        )
        .with_causes(Cause::Mprotect, None),
        BracketSource::new(
            NotifyEvent::Unmap,
            unmap,
            0,
            &format!("munmap of the whole ODP region while the MR exists {interval}"),
            "vms_clear_ptes → unmap_vmas: one MMU_NOTIFY_UNMAP bracket per munmap; the region is a whole isolated \
             VMA without THP, so no split bracket",
        )
        .with_causes(Cause::Munmap, None),
    ];
    if args.concurrent {
        sources.push(
            BracketSource::new(
                NotifyEvent::Clear,
                window_clear,
                0,
                &format!("madvise(MADV_DONTNEED) of the window page before each RDMA WRITE into it {interval}"),
                "madvise_dontneed_single_vma → zap_page_range_single(_batched): one bracket per call (opened whether \
                 or not the page is present); the WRITE then faults a fresh page (anonymous write fault, no bracket)",
            )
            .with_causes(Cause::Madvise, None),
        );
        sources.push(
            BracketSource::new(
                NotifyEvent::Clear,
                concurrent_clear,
                0,
                &format!(
                    "madvise(MADV_DONTNEED) of a page of R outside the window by the helper's second thread, while \
                     RDMA operations run {interval}"
                ),
                "madvise_dontneed_single_vma → zap_page_range_single(_batched), each after a one-byte write of the \
                 page (an anonymous write fault: no bracket)",
            )
            .with_causes(Cause::Madvise, None),
        );
    }
    let invalidations = InvalidationTruth::from_sources(sources);
    let params = RdmaOdpParams {
        rounds: args.rounds,
        region_bytes: get("region_bytes")?,
        rdma_writes: get("rdma_writes")?,
        rdma_reads: get("rdma_reads")?,
        concurrent: args.concurrent,
        concurrent_clear,
        window_clear,
    };
    let mut truth = GroundTruth::new(ScenarioParams::RdmaOdp(params), cgroups, 0, invalidations);
    truth.pid = pid;
    truth.interval = Some(IntervalTruth {
        invalidations: clear + protect + unmap + window_clear + concurrent_clear,
        misses: get("miss_calls")?,
        concurrent_misses: 0,
        read_waits: 0,
        read_retries: 0,
        hmm_busy: 0,
        collisions_timed: args.concurrent,
        read_collisions: None,
        kernel_path: format!(
            "rxe_odp_mr_copy → rxe_odp_map_range_and_lock → ib_umem_odp_map_dma_and_lock: mmu_interval_read_begin, \
             hmm_range_fault, mmu_interval_read_retry (inline), {}",
            if args.concurrent {
                "also while the helper's second thread invalidates R (waits and -EBUSY: the trace reference's count)"
            } else {
                "never during an invalidation here"
            }
        ),
        notifiers: Vec::new(),
    });
    Ok(truth)
}

/// A soft-RoCE link on a dummy netdev with an IPv4 address (its GID), made once per boot.
fn soft_roce_link() -> Result<()> {
    if Path::new("/sys/class/infiniband").join(RXE).exists() {
        return Ok(());
    }
    for module in ["rdma_rxe", "ib_uverbs", "dummy"] {
        ensure!(
            Path::new("/sys/module").join(module).exists(),
            "the kernel module {module} is not loaded (the vm harness loads it where the kernel has it)"
        );
    }
    for cmd in [
        vec!["ip", "link", "add", NETDEV, "type", "dummy"],
        vec!["ip", "addr", "add", ADDRESS, "dev", NETDEV],
        vec!["ip", "link", "set", NETDEV, "up"],
        vec!["rdma", "link", "add", RXE, "type", "rxe", "netdev", NETDEV],
    ] {
        let status = Command::new(cmd[0]).args(&cmd[1..]).status().with_context(|| format!("running {cmd:?}"))?;
        ensure!(status.success(), "{cmd:?} failed ({status})");
    }
    let devices = fs::read_dir("/sys/class/infiniband").context("/sys/class/infiniband")?.count();
    ensure!(devices > 0, "`rdma link add` made no RDMA device");
    Ok(())
}

/// `key=value` lines; numeric values only are kept.
fn parse_report(text: &str) -> Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=').with_context(|| format!("not key=value: {line:?}"))?;
        if let Ok(n) = v.parse() {
            out.insert(k.to_owned(), n);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lines() {
        let r = parse_report("device=rxe0\nclear=8\nunmap=1\n").unwrap();
        assert_eq!(r.get("clear"), Some(&8));
        assert_eq!(r.get("unmap"), Some(&1));
        assert!(!r.contains_key("device"));
        assert!(parse_report("garbage").is_err());
    }
}
