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
    Ok(ExitCode::SUCCESS)
}
