//! Tier `eco`: the agent against the real tools of its ecosystem (`mmuscope-tests`' `exporter` test target) — a
//! Prometheus server and promtool (Debian `prometheus`), schemathesis against the served OpenAPI document, curl for
//! TLS and basic auth, 10,000 real cgroups, `mmuscope top` in tmux. Same prerequisites as `host` (root, /dev/kvm,
//! BTF).
//!
//! schemathesis comes from PyPI into a project-local venv, `target/eco/venv` (made with Debian's python3-venv; no
//! global pip installs), and is reinstalled only when its version differs from [`SCHEMATHESIS`].

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use super::{Context, Outcome, prerequisites};
use crate::{process, progress, toolchain, workspace::Profile};

/// The schemathesis release the tier installs (pinned, so a new release cannot change the checks under us).
const SCHEMATHESIS: &str = "4.32.5";

pub fn run(ctx: &Context) -> Result<Outcome> {
    if let Some(skipped) = prerequisites::unmet_prerequisites(ctx)? {
        return Ok(skipped);
    }
    let venv = ctx.ws.target_dir().join("eco/venv");
    let schemathesis = ensure_schemathesis(&venv)?;

    let mut cmd = toolchain::host_cargo(ctx.ws);
    cmd.args(["test", "-p", "mmuscope-tests", "--test", "exporter"]).args(["--", "--test-threads=1", "--nocapture"]);
    for (var, name) in [("MMUSCOPE_AGENT_BIN", "mmuscope"), ("MMUSCOPE_WORKLOAD_BIN", "mmuscope-workload")] {
        let path = ctx.ws.binary(Profile::Debug, name);
        if !path.is_file() {
            bail!("{} was not built by `cargo build --workspace`", path.display());
        }
        cmd.env(var, path);
    }
    cmd.env("MMUSCOPE_SCHEMATHESIS", schemathesis);
    process::run(&mut cmd)?;
    Ok(Outcome::Passed)
}

/// `<venv>/bin/schemathesis` at [`SCHEMATHESIS`], creating the venv and installing it when needed.
fn ensure_schemathesis(venv: &Path) -> Result<std::path::PathBuf> {
    let bin = venv.join("bin/schemathesis");
    let installed = Command::new(&bin).arg("--version").output().ok().filter(|o| o.status.success());
    let version = installed.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if version.ends_with(SCHEMATHESIS) {
        progress::say("eco", format!("schemathesis {SCHEMATHESIS} present ({})", bin.display()));
        return Ok(bin);
    }
    if !venv.join("bin/pip").is_file() {
        progress::say("eco", format!("creating a Python venv for schemathesis in {}", venv.display()));
        process::run(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(venv))
            .context("python3 -m venv (Debian package python3-venv)")?;
    }
    progress::say("eco", format!("installing schemathesis {SCHEMATHESIS} from PyPI into the venv (~1 min)"));
    process::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("schemathesis=={SCHEMATHESIS}"),
    ]))?;
    Ok(bin)
}
