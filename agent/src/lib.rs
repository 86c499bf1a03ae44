//! `mmuscope`: makes secondary-MMU invalidation behaviour visible per cgroup.
//!
//! The kernel side (crate `mmuscope-ebpf`) counts and times `mmu_notifier` invalidations; this
//! library decides per kernel which probes attach ([`probes`]), reads the maps at scrape time
//! ([`collect`], [`export`]) and serves them over HTTP ([`web`]): the text exposition and a JSON API
//! ([`api`], built on the per-cgroup view in [`model`]), with TLS and basic auth from an exporter-toolkit web
//! config ([`webconfig`]). Cgroup ids become labels in [`cgroups`]. `mmuscope top` ([`top`]) and `snapshot`
//! ([`client`]) read that API from a local or remote agent.

mod api;
mod births;
mod bpfstats;
mod cgroup_maps;
pub mod cgroups;
mod check;
mod cli;
mod client;
mod collect;
pub mod config;
mod export;
mod exposition;
mod generate;
pub mod kernel;
mod logging;
mod model;
mod privileges;
pub mod probes;
mod ringbuf;
mod service;
mod slow;
mod stacks;
mod subscribers;
mod top;
mod version;
mod web;
pub mod webconfig;

/// `mmuscope`: parses the command line, runs the subcommand and exits with its status.
pub fn main() -> ! {
    let cli = config::parse_cli();
    logging::init(match &cli.command {
        Some(cli::Command::Run(args)) => &args.log,
        Some(cli::Command::Check(args)) => &args.log,
        _ => &cli.run.log,
    });
    let result = match cli.command {
        Some(cli::Command::Check(args)) => {
            let _ = kernel::tracefs::locate(); // as in `run`
            check::run(&args)
        }
        Some(cli::Command::Run(args)) => run(args),
        Some(cli::Command::Top(args)) => top::run(&args),
        Some(cli::Command::Snapshot(args)) => client::snapshot(&args),
        Some(cli::Command::Stacks(args)) => client::stacks(&args),
        Some(cli::Command::MetricsReference) => {
            print!("{}", export::metrics_reference());
            Ok(0)
        }
        Some(cli::Command::Generate { dir }) => generate::write(&dir).map(|files| {
            files.iter().for_each(|f| println!("{}", dir.join(f).display()));
            0
        }),
        None => run(cli.run),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("mmuscope: error: {e:#}");
            std::process::exit(exit_status(&e));
        }
    }
}

/// 2: bad configuration; 3: `--probes.strict` and a required family missing; 4: missing capabilities; 1: anything
/// else.
fn exit_status(e: &anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<privileges::preflight::MissingCapabilities>()) {
        privileges::preflight::EXIT_MISSING_CAPABILITIES
    } else if e.chain().any(|c| c.is::<probes::MissingRequired>()) {
        check::EXIT_STRICT // --probes.strict
    } else if e.chain().any(|c| c.is::<probes::PinError>()) {
        config::EXIT_CONFIG // a --pin directory that cannot be used as given
    } else {
        config::exit_status(e)
    }
}

fn run(args: cli::RunArgs) -> anyhow::Result<i32> {
    // Before any other thread exists, so that a mount namespace made for tracefs is every thread's.
    let _ = kernel::tracefs::locate();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(service::run(args))?;
    Ok(0)
}
