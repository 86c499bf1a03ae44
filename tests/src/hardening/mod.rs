//! Support for the hardening tests (`tests/hardening_*.rs`): the agent run to completion (exit status and
//! stderr), raw HTTP requests (oversized, malformed), the BPF objects a process holds, and kvm-madvise and
//! fork-pinned runs in fresh cgroups.

pub mod bpf_objects;
pub mod rawhttp;
pub mod wrk;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::cgroup::CgroupPath;
use crate::harness::scrape::Scraper;
use crate::harness::{CgroupGuard, HostEnv, counter_by_cgroup, run_workload};
use crate::truth::GroundTruth;

/// Runs its arguments in a mount namespace of their own where tracefs is mounted at `/sys/kernel/tracing`, as the
/// systemd unit's `RequiresMountsFor=/sys/kernel/tracing` guarantees (the host's mounts stay as they are). Exit 97
/// if it cannot be mounted.
pub const WITH_TRACEFS: [&str; 9] = [
    "unshare",
    "--mount",
    "--propagation",
    "slave",
    "--",
    "sh",
    "-c",
    "mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || exit 97; exec \"$@\"",
    "with-tracefs",
];

/// Runs its arguments in a mount namespace of their own where neither tracefs nor debugfs is mounted, a new
/// machine's state (unmounted there, deepest first; the host keeps its mounts). Exit 97 if one is still mounted.
pub const WITHOUT_TRACEFS: [&str; 9] = [
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    "awk '/ - (tracefs|debugfs) / {print $5}' /proc/self/mountinfo | sort -r | \
     while read -r m; do umount -l \"$m\"; done; \
     if grep -Eq ' - (tracefs|debugfs) ' /proc/self/mountinfo; then echo 'tracefs still mounted' >&2; exit 97; fi; \
     exec \"$@\"",
    "no-tracefs",
];

/// A command that runs `wrapper` (one of the above) with the program and arguments added later.
pub fn wrapped(wrapper: &[&str]) -> Command {
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..]);
    cmd
}

/// The exit status and stderr of `bin args` (stdin closed), killed after `timeout`.
pub fn run_to_exit(bin: &Path, args: &[&str], timeout: Duration) -> Result<(i32, String)> {
    run_command_to_exit(Command::new(bin).args(args), timeout)
}

/// [`run_to_exit`] for any command (e.g. the agent under `setpriv`).
pub fn run_command_to_exit(cmd: &mut Command, timeout: Duration) -> Result<(i32, String)> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {shown}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!("{shown} still running after {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let code = out.status.code().with_context(|| format!("{shown} killed by a signal: {}", out.status))?;
    Ok((code, String::from_utf8_lossy(&out.stderr).into_owned()))
}

/// kvm-madvise with `iterations` rounds in a fresh cgroup `<parent>/<name>`, removed when the guard drops.
pub fn kvm_madvise(env: &HostEnv, parent: &str, name: &str, iterations: u64) -> Result<(CgroupGuard, GroundTruth)> {
    let rel = CgroupPath::parse(parent)?.join(name)?;
    let guard = CgroupGuard::new(env.hierarchies.clone(), rel);
    let n = iterations.to_string();
    let truth = run_workload(
        &env.workload_bin,
        ["kvm-madvise", "--iterations", &n, "--cgroup-parent", parent, "--cgroup-name", name],
    )?;
    Ok((guard, truth))
}

/// fork-pinned with 64 pinned pages in a fresh cgroup `<parent>/<name>` (removed on return): the agent's fork-copy
/// counters for it must equal the workload's truth (pages whose PFN changed across the fork) within 10 s.
pub fn fork_pinned_counts_exactly(env: &HostEnv, scraper: &Scraper, parent: &str, name: &str) -> Result<()> {
    let _guard = CgroupGuard::new(env.hierarchies.clone(), CgroupPath::parse(parent)?.join(name)?);
    // The workload forks once the agent has its fork-copy hook attached (it attaches it when it sees the pin).
    let truth = run_workload(
        &env.workload_bin,
        [
            "fork-pinned",
            "--pages",
            "64",
            "--cgroup-parent",
            parent,
            "--cgroup-name",
            name,
            "--agent-url",
            scraper.base(),
        ],
    )?;
    let fork = truth.fork.as_ref().context("fork-pinned reported no fork truth")?;
    let label = truth.cgroups.attributed().path.to_string();
    let expected = [
        ("mmuscope_fork_pinned_page_copies_total", fork.copied_pages),
        ("mmuscope_fork_pinned_copy_bytes_total", fork.copied_bytes),
        ("mmuscope_forks_with_pinned_pages_total", fork.forks_with_pinned_pages),
    ];
    // Exact: fork copies every pinned page of the parent eagerly (copy_present_page), and all 64 are pinned.
    ensure!(
        fork.pinned_pages == 64 && fork.copied_pages == 64,
        "the workload's fork did not copy its 64 pinned pages: {fork:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = scraper.metrics()?;
        let got: Vec<f64> = expected
            .iter()
            .map(|(family, _)| counter_by_cgroup(&e, family).get(&label).copied().unwrap_or(0.0))
            .collect();
        let want: Vec<f64> = expected.iter().map(|(_, v)| *v as f64).collect();
        if got == want {
            println!("fork-pinned --pages 64 in {label}: ground truth (PFNs that changed) {want:?} = /metrics {got:?}");
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{label}: /metrics {got:?} != ground truth {want:?} for {expected:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
