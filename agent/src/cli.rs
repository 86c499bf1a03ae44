//! Command-line interface. Flags follow the Prometheus exporter conventions
//! (`--web.listen-address`, `--web.telemetry-path`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::probes::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "mmuscope",
    version,
    args_conflicts_with_subcommands = true,
    about = "Secondary-MMU invalidation metrics (mmu_notifier) per cgroup, via eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, the default command.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the probes and serve metrics (the default).
    Run(RunArgs),
    /// Show the probe plan for this kernel: what attaches, in which mode, and why not.
    Check(CheckArgs),
}

#[derive(Args, Debug, Clone)]
pub struct KernelArgs {
    /// Kernel BTF to read struct layouts and prototypes from.
    #[arg(long, value_name = "PATH", default_value = crate::kernel::KernelBtf::DEFAULT_PATH)]
    pub btf: PathBuf,
    /// Only use attach alternatives of this mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// max_entries of each aggregation map (cgroup × event keys).
    #[arg(long = "map.stats-entries", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub stats_map_entries: u32,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Address to serve HTTP on; repeat for several.
    #[arg(long = "web.listen-address", value_name = "HOST:PORT", default_values_t = [SocketAddr::from(([0, 0, 0, 0], 9476))])]
    pub listen: Vec<SocketAddr>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = telemetry_path)]
    pub telemetry_path: String,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit 3 unless every family attached with its best alternative (within --mode).
    #[arg(long)]
    pub strict: bool,
}

fn telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.len() < 2 {
        return Err("must start with '/' and name a path, e.g. /metrics".into());
    }
    if ["/healthz", "/readyz"].contains(&s) {
        return Err(format!("{s} is reserved"));
    }
    Ok(s.to_string())
}
