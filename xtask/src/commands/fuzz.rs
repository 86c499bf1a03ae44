//! `cargo xtask fuzz [--seconds N] [--target T ...]`.

use std::process::ExitCode;

use anyhow::Result;

use crate::{cli::FuzzArgs, fuzz, workspace::Workspace};

pub fn run(ws: &Workspace, args: &FuzzArgs) -> Result<ExitCode> {
    let targets: Vec<String> = if args.targets.is_empty() {
        fuzz::TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    fuzz::run(ws, &targets, args.seconds)?;
    Ok(ExitCode::SUCCESS)
}
