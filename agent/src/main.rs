//! `mmuscope`: makes secondary-MMU invalidation behaviour visible per cgroup.
//!
//! The kernel side (crate `mmuscope-ebpf`) counts and times `mmu_notifier` invalidations; this
//! binary decides per kernel which probes attach ([`probes`]), reads the maps at scrape time
//! ([`collect`], [`export`]) and serves them over HTTP ([`web`]).

mod cgroups;
mod check;
mod cli;
mod collect;
mod export;
mod kernel;
mod probes;
mod service;
mod web;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    init_tracing();
    let result = match cli.command {
        Some(cli::Command::Check(args)) => check::run(&args),
        Some(cli::Command::Run(args)) => run(args),
        None => run(cli.run),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mmuscope: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(args: cli::RunArgs) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(service::run(args))?;
    Ok(0)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MMUSCOPE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // `try_init` also installs the `log` → `tracing` bridge that carries aya-log records.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).try_init();
}
