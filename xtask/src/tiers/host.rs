//! Tier `host`: the agent and the workload generator on this machine's kernel
//! (`mmuscope-tests`' `host` and `stacks` test targets and the `hardening_*` ones). Needs root, `/dev/kvm` and kernel BTF; without them
//! the tier is skipped with the reason, except in CI, where that is a failure. It ends with the smoke of the
//! benchmark harness (`cargo xtask bench --quick`: debug binaries, tiny counts, structural checks only).

use anyhow::{Result, bail};

use super::{Context, Outcome, prerequisites::unmet_prerequisites};
use crate::{process, toolchain, workspace::Profile};

/// The binaries the test drives, and the variables that tell it where they are.
/// The hardening suite (`tests/tests/hardening_*.rs`): bad input, kernel faults, load, restarts, privileges.
const HARDENING: &[&str] = &[
    "hardening_input",
    "hardening_faults",
    "hardening_privileges",
    "hardening_load",
    "hardening_restarts",
    "hardening_pin",
    "hardening_tracefs",
];

const BINARIES: &[(&str, &str)] = &[("MMUSCOPE_AGENT_BIN", "mmuscope"), ("MMUSCOPE_WORKLOAD_BIN", "mmuscope-workload")];

pub fn run(ctx: &Context) -> Result<Outcome> {
    if let Some(skipped) = unmet_prerequisites(ctx)? {
        return Ok(skipped);
    }

    for (_, name) in BINARIES {
        let path = ctx.ws.binary(Profile::Debug, name);
        if !path.is_file() {
            bail!("{} was not built by `cargo build --workspace`", path.display());
        }
    }
    // Every test binary runs even when one fails, and each failure is named at the end.
    let mut failures = Vec::new();
    for target in ["host", "stacks"].iter().chain(HARDENING) {
        let mut cmd = toolchain::host_cargo(ctx.ws);
        cmd.args(["test", "-p", "mmuscope-tests", "--test", target, "--", "--test-threads=1", "--nocapture"]);
        for (var, name) in BINARIES {
            cmd.env(var, ctx.ws.binary(Profile::Debug, name));
        }
        if let Err(e) = process::run(&mut cmd) {
            failures.push(format!("{target}: {e:#}"));
        }
    }
    if let Err(e) = crate::bench::smoke(ctx.ws) {
        failures.push(format!("bench smoke: {e:#}"));
    }
    if !failures.is_empty() {
        bail!("{} of {} parts failed: {}", failures.len(), HARDENING.len() + 3, failures.join("; "));
    }
    Ok(Outcome::Passed)
}
