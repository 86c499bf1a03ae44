//! `mmuscope-workload`: drives real kernel paths that fire mmu_notifier invalidations and prints exactly what it
//! caused as one JSON object on stdout (schema: `mmuscope_tests::truth`). Progress goes to stderr.
//!
//! Layout: `cli` (arguments), `scenarios/` (one file per scenario), `cgroups` (the fresh-cgroup step and
//! `cleanup-cgroup`), `vm` (the KVM VM fixture), `region` (the anonymous guest-memory mapping). The ground-truth
//! model and the cgroup fixture live in the library (`mmuscope_tests`), shared with the integration tests.

mod cgroups;
mod cli;
mod region;
mod scenarios;
mod vm;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmuscope-workload: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::KvmMadvise(args) => {
            let truth = scenarios::kvm_madvise::run(&args)?;
            // Only after the scenario finished (VM destroyed): buffering and printing may allocate and free.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", truth.to_json()).context("writing ground truth to stdout")?;
            out.flush().context("writing ground truth to stdout")?;
        }
        Command::CleanupCgroup(args) => cgroups::cleanup(&args)?,
    }
    Ok(())
}
