//! `cargo xtask setup [--check] [--group G ...]`.

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    cli::SetupArgs,
    setup::{self, Group, Mode},
    workspace::Workspace,
};

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
