//! `mmuscope-bench-fixture`: what `cargo xtask bench` needs beyond the agent and the workload, held until stdin
//! reaches end of file. Prints `ready` once in place. Needs root.
//!
//! * `floor --object PATH`: empty programs on the agent's tracepoint-mode hooks (`floor`);
//! * `cgroups --agent-pid P --count N`: N real cgroups with counts in that agent's map (`cgroups`).

mod cgroups;
mod floor;

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Benchmark fixtures for `cargo xtask bench`, held until stdin closes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach the object's empty `floor_*` programs to the agent's tracepoint-mode hooks.
    Floor {
        /// The agent's eBPF object (target/bpf/bpfel-unknown-none/release/mmuscope).
        #[arg(long, value_name = "PATH")]
        object: PathBuf,
    },
    /// Create N cgroups in the default hierarchy and give each a count in the agent's KVM map; removed at the end.
    Cgroups {
        #[arg(long, value_name = "PID")]
        agent_pid: u32,
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        count: u32,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Floor { object } => {
            let _links = floor::attach(&object)?;
            hold()
        }
        Command::Cgroups { agent_pid, count } => {
            let made = cgroups::Created::new(count as usize)?;
            cgroups::inject(agent_pid, &made)?;
            hold()
            // `made` removes the cgroups when dropped.
        }
    }
}

/// Says `ready`, then waits for stdin to close (the bench harness keeps it open while it measures).
fn hold() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}
