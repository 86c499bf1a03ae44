//! `cargo xtask setup [--check] [--group G ...]`.

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    setup::{self, Group, Mode},
    workspace::Workspace,
};

/// The flags of `cargo xtask setup`.
#[derive(clap::Args)]
pub struct SetupArgs {
    /// Only report what is present and what is missing; exit non-zero if anything is missing.
    #[arg(long)]
    pub check: bool,
    /// Set up only these package groups (repeatable; default: all).
    #[arg(long = "group", value_enum, value_name = "GROUP")]
    pub groups: Vec<Group>,
}

pub fn run(ws: &Workspace, args: &SetupArgs) -> Result<ExitCode> {
    let groups = if args.groups.is_empty() { Group::ALL } else { &args.groups };
    let mode = if args.check { Mode::Check } else { Mode::Install };
    setup::setup(ws, groups, mode)?;
    // The fuzz targets' runner (the `unit` tier and `cargo xtask fuzz` use it); not an apt group.
    if args.groups.is_empty() && mode == Mode::Install {
        crate::fuzz::ensure_cargo_fuzz(ws)?;
    }
    Ok(ExitCode::SUCCESS)
}
