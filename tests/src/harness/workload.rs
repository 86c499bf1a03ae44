//! Running `mmuscope-workload` and reading its ground truth.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::truth::GroundTruth;

/// Runs the workload to completion and parses its stdout (exactly one JSON object). Its stderr (progress) is
/// echoed through the test's own stderr so that it shows with `--nocapture`; a failed run's error includes it.
pub fn run_workload<I, S>(bin: &Path, args: I) -> Result<GroundTruth>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin);
    cmd.args(args);
    run_workload_command(cmd)
}

/// [`run_workload`] of a command set up by the caller (e.g. with a `pre_exec` step).
pub fn run_workload_command(mut cmd: Command) -> Result<GroundTruth> {
    cmd.stdin(Stdio::null());
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines() {
        eprintln!("[workload] {line}");
    }
    if !out.status.success() {
        bail!("{shown} exited with {}; stderr:\n{stderr}", out.status);
    }
    let stdout = String::from_utf8(out.stdout).context("workload stdout is not UTF-8")?;
    GroundTruth::from_json(&stdout).with_context(|| format!("workload stdout was:\n{stdout}"))
}
