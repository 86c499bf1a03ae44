//! `cargo xtask build [--release]`: set up the eBPF toolchain, then `cargo build --workspace`,
//! which builds the agent (its build script builds and embeds the eBPF programs), the ABI crate
//! and the `mmuscope-workload` generator.

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    process,
    setup::{self, Group, Mode},
    toolchain,
    workspace::Workspace,
};

/// The flags of `cargo xtask build`.
#[derive(clap::Args)]
pub struct BuildArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// What building needs.
pub const GROUPS: &[Group] = &[Group::EbpfBuild];

pub fn run(ws: &Workspace, args: &BuildArgs) -> Result<ExitCode> {
    setup::setup(ws, GROUPS, Mode::Install)?;
    build_workspace(ws, args.release)?;
    Ok(ExitCode::SUCCESS)
}

/// `cargo build --workspace [--release]` (the set-up must be done).
pub fn build_workspace(ws: &Workspace, release: bool) -> Result<()> {
    let mut cmd = toolchain::host_cargo(ws);
    cmd.args(["build", "--workspace"]);
    if release {
        cmd.arg("--release");
    }
    process::run(&mut cmd)
}
