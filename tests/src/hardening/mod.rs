//! Support for the hardening tests (`tests/hardening_*.rs`): the agent run to completion (exit status and
//! stderr), raw HTTP requests (oversized, malformed), the BPF objects a process holds, and kvm-madvise runs in
//! fresh cgroups.

pub mod bpf_objects;
pub mod rawhttp;
pub mod wrk;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cgroup::CgroupPath;
use crate::harness::{CgroupGuard, HostEnv, run_workload};
use crate::truth::GroundTruth;

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
