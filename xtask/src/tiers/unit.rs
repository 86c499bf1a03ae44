//! Tier `unit`: every test that needs neither root nor a kernel, i.e. all test targets except
//! `mmuscope-tests`' `host` integration test.

use anyhow::Result;

use super::{Context, Outcome, run_all};
use crate::toolchain;

pub fn run(ctx: &Context) -> Result<Outcome> {
    let mut workspace = toolchain::host_cargo(ctx.ws);
    workspace.args(["test", "--workspace", "--exclude", "mmuscope-tests"]);

    let mut tests_crate = toolchain::host_cargo(ctx.ws);
    tests_crate.args(["test", "-p", "mmuscope-tests", "--lib", "--bins"]);

    run_all([workspace, tests_crate])
}
