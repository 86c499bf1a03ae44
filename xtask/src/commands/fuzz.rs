//! `cargo xtask fuzz [--seconds N] [--target T ...]`.

use std::process::ExitCode;

use anyhow::Result;

use crate::{fuzz, workspace::Workspace};

/// The flags of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Targets to run (repeatable or comma-separated; default: all).
    #[arg(long = "target", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::fuzz::TARGETS))]
    pub targets: Vec<String>,
}

pub fn run(ws: &Workspace, args: &FuzzArgs) -> Result<ExitCode> {
    let targets: Vec<String> = if args.targets.is_empty() {
        fuzz::TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        args.targets.clone()
    };
    fuzz::run(ws, &targets, args.seconds)?;
    Ok(ExitCode::SUCCESS)
}
