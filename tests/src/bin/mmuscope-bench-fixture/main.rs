//! `mmuscope-bench-fixture`: what `cargo xtask bench` needs beyond the agent and the workload, held until stdin
//! reaches end of file. Prints `ready` once in place. Needs root.
//!
//! * `floor --object PATH --tp-btf NAME… --tracepoint GROUP:NAME… [--count-on NAME]`: empty programs on those hooks
//!   (the bench passes the agent's tracepoint-mode hooks), one of them optionally the per-cgroup count (`floor`);
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
    /// Attach the object's empty `floor_*` programs to the hooks given (the agent's tracepoint-mode hooks).
    Floor {
        /// The agent's eBPF object (target/bpf/bpfel-unknown-none/release/mmuscope).
        #[arg(long, value_name = "PATH")]
        object: PathBuf,
        /// A `tp_btf` hook (tracepoint name).
        #[arg(long, value_name = "NAME")]
        tp_btf: Vec<String>,
        /// A classic tracepoint hook.
        #[arg(long, value_name = "GROUP:NAME")]
        tracepoint: Vec<String>,
        /// The `tp_btf` hook that gets the per-cgroup count program instead of the empty one.
        #[arg(long, value_name = "NAME")]
        count_on: Option<String>,
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
        Command::Floor { object, tp_btf, tracepoint, count_on } => {
            let _links = floor::attach(&object, &floor::Hooks { tp_btf, tracepoints: tracepoint, count_on })?;
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

/// Says `ready`, then waits for stdin to close (the bench harness keeps it open while it measures) or for SIGTERM,
/// SIGINT or SIGHUP; either way the caller's fixtures are then dropped, so a fixture killed by hand leaves no
/// cgroups behind (10,000 leftover cgroups slow every later agent start on the host).
fn hold() -> Result<()> {
    // Blocked here, before any thread starts, so that only `sigwait` below receives them.
    // SAFETY: sigset manipulation on a local set; pthread_sigmask affects this thread and threads spawned later.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let stdin_done = done.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = stdin_done.send(());
    });
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` holds the signals blocked above; sigwait writes the one received into `sig`.
        unsafe { libc::sigwait(&set, &mut sig) };
        let _ = done.send(());
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let _ = wait.recv();
    Ok(())
}
