//! The command line of `cargo xtask` (clap derive): the commands and their flags, except `bench` and `vm`, which
//! declare theirs beside their code. The commands run in `commands/`, `bench/` and `vm/`.

use clap::{Args, Parser, Subcommand};

use crate::{setup::Group, tiers};

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
    Setup(SetupArgs),
    /// Build the workspace (agent with its embedded eBPF programs, workload generator).
    Build(BuildArgs),
    /// Build the agent in release mode and start it (`mmuscope run`); needs root.
    Run(RunArgs),
    /// Run the test tiers and print a summary.
    Test(TestArgs),
    /// Regenerate the generated docs (docs/metrics.md from the agent's metric families).
    Docs(DocsArgs),
    /// Stock Debian kernels under QEMU: fetch, run a command in a guest, the tested-kernels table.
    Vm(crate::vm::cli::VmArgs),
    /// Fuzz the agent's parsers (config, web config, cgroup paths, BTF → probe plan) with cargo-fuzz and nightly.
    Fuzz(FuzzArgs),
    /// Long hardening runs (root): churn soak with the agent's RSS slope, 200 clients for a minute, longer fuzzing.
    Soak(SoakArgs),
    /// Benchmarks (probe cost per invalidation, fork with pins, the agent at scale) → target/bench/, BENCHMARKS.md.
    Bench(crate::bench::BenchArgs),
}

#[derive(Args)]
pub struct SoakArgs {
    /// Length of the churn soak.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Length of the 200-client load run.
    #[arg(long, default_value_t = 60)]
    pub load_seconds: u32,
    /// Seconds of fuzzing per target afterwards (0: none).
    #[arg(long, default_value_t = 120)]
    pub fuzz_seconds: u32,
}

#[derive(Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u32,
    /// Targets to run (repeatable or comma-separated; default: all).
    #[arg(long = "target", value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(crate::fuzz::TARGETS))]
    pub targets: Vec<String>,
}

#[derive(Args)]
pub struct DocsArgs {
    /// Only check that the generated files are up to date; exit non-zero if not.
    #[arg(long)]
    pub check: bool,
}

#[derive(Args)]
pub struct SetupArgs {
    /// Only report what is present and what is missing; exit non-zero if anything is missing.
    #[arg(long)]
    pub check: bool,
    /// Set up only these package groups (repeatable; default: all).
    #[arg(long = "group", value_enum, value_name = "GROUP")]
    pub groups: Vec<Group>,
}

#[derive(Args)]
pub struct BuildArgs {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

#[derive(Args)]
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

#[derive(Args)]
pub struct TestArgs {
    /// Tier to run (repeatable or comma-separated; default: all). Tiers run in their fixed order.
    #[arg(long = "tier", value_name = "TIER", value_delimiter = ',', value_parser = tiers::name_parser())]
    pub tiers: Vec<String>,
    /// Stop after the first failed tier (default: run every selected tier).
    #[arg(long)]
    pub fail_fast: bool,
}
