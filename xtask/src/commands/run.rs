//! `cargo xtask run [--release|--debug] [-- <agent args>]`: set up, build the agent, then replace
//! this process with `mmuscope run <agent args>`. Loading eBPF needs root (or CAP_BPF +
//! CAP_PERFMON), checked before anything is built.

use std::{os::unix::process::CommandExt, process::Command, process::ExitCode};

use anyhow::{Result, bail};

use crate::{
    commands::build,
    privilege::Privilege,
    process, progress,
    setup::{self, Mode},
    toolchain,
    workspace::{Profile, Workspace},
};

/// The flags of `cargo xtask run`.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Build with the release profile (the default; accepted for symmetry with `build`).
    #[arg(long, conflicts_with = "debug")]
    pub release: bool,
    /// Build and run the debug profile instead.
    #[arg(long)]
    pub debug: bool,
    /// Arguments for `mmuscope run` (after `--`).
    #[arg(last = true, value_name = "AGENT_ARGS")]
    pub agent_args: Vec<String>,
}

pub fn run(ws: &Workspace, args: &RunArgs) -> Result<ExitCode> {
    let privilege = Privilege::current();
    if !privilege.can_load_bpf() {
        bail!(
            "the agent loads eBPF programs, which needs root or CAP_BPF + CAP_PERFMON \
             (euid here: {}). Run `sudo -E cargo xtask run` (if sudo resets PATH: \
             `sudo -E env \"PATH=$PATH\" cargo xtask run`)",
            privilege.euid
        );
    }
    // Running needs exactly what building needs.
    setup::setup(ws, build::GROUPS, Mode::Install)?;

    let profile = if args.debug { Profile::Debug } else { Profile::Release };
    let mut cargo = toolchain::host_cargo(ws);
    cargo.args(["build", "--package", "mmuscope", "--bin", "mmuscope"]);
    if matches!(profile, Profile::Release) {
        cargo.arg("--release");
    }
    process::run(&mut cargo)?;

    let mut agent = Command::new(ws.binary(profile, "mmuscope"));
    agent.arg("run").args(&args.agent_args);
    let line = process::describe(&agent);
    progress::say("run", format!("starting {line}"));
    let err = agent.exec();
    bail!("could not start `{line}`: {err}")
}
