//! The command line of `cargo xtask` (clap derive) and its dispatch: each command declares its flags beside its
//! code (`commands/`, `bench/`, `vm/`), and this file only names the commands and runs the one chosen.

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::{bench, commands, vm, workspace::Workspace};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "mmuscope's set-up, build, run and test tasks",
    after_help = "`run` and `test` install what they need first; `setup` alone is rarely needed."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Install the toolchain: Debian packages (apt) and bpf-linker (into .tools/). Idempotent.
    Setup(commands::setup::SetupArgs),
    /// Build the workspace (agent with its embedded eBPF programs, workload generator).
    Build(commands::build::BuildArgs),
    /// Build the agent in release mode and start it (`mmuscope run`); needs root.
    Run(commands::run::RunArgs),
    /// Run the test tiers and print a summary.
    Test(commands::test::TestArgs),
    /// Regenerate the generated docs (docs/metrics.md from the agent's metric families).
    Docs(commands::docs::DocsArgs),
    /// Stock Debian kernels under QEMU: fetch, run a command in a guest, the tested-kernels table.
    Vm(vm::cli::VmArgs),
    /// Fuzz the agent's parsers (config, web config, cgroup paths, BTF → probe plan) with cargo-fuzz and nightly.
    Fuzz(commands::fuzz::FuzzArgs),
    /// Long hardening runs (root): churn soak with the agent's RSS slope, 200 clients for a minute, longer fuzzing.
    Soak(commands::soak::SoakArgs),
    /// Benchmarks (probe cost per invalidation, fork with pins, the agent at scale) → target/bench/, BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

impl Command {
    /// Runs the command in the workspace `ws`.
    pub fn run(&self, ws: &Workspace) -> Result<ExitCode> {
        match self {
            Command::Setup(args) => commands::setup::run(ws, args),
            Command::Build(args) => commands::build::run(ws, args),
            Command::Run(args) => commands::run::run(ws, args),
            Command::Test(args) => commands::test::run(ws, args),
            Command::Docs(args) => commands::docs::run(ws, args),
            Command::Vm(args) => vm::run(ws, args),
            Command::Fuzz(args) => commands::fuzz::run(ws, args),
            Command::Soak(args) => commands::soak::run(ws, args),
            Command::Bench(args) => bench::run(ws, args),
        }
    }
}
