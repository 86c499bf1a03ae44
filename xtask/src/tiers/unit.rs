//! Tier `unit`: every test that needs neither root nor a kernel, i.e. all test targets except
//! `mmuscope-tests`' `host` integration test, plus a bounded fuzz run of every cargo-fuzz target
//! ([`crate::fuzz::smoke`]: unoptimized builds, [`crate::fuzz::TIER_SECONDS`] each).

use anyhow::Result;

use super::{Context, Outcome, run_all};
use crate::{fuzz, toolchain};

pub fn run(ctx: &Context) -> Result<Outcome> {
    let mut workspace = toolchain::host_cargo(ctx.ws);
    workspace.args(["test", "--workspace", "--exclude", "mmuscope-tests"]);

    let mut tests_crate = toolchain::host_cargo(ctx.ws);
    tests_crate.args(["test", "-p", "mmuscope-tests", "--lib", "--bins"]);

    let tests = run_all([workspace, tests_crate]);
    let fuzzed = fuzz::smoke(ctx.ws);
    match (tests, fuzzed) {
        (Ok(outcome), Ok(())) => Ok(outcome),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(e),
        (Err(t), Err(f)) => anyhow::bail!("{t:#}; {f:#}"),
    }
}
