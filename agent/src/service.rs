//! `mmuscope run`: probe the kernel, attach, serve until SIGINT/SIGTERM, then detach.

use std::sync::Arc;

use anyhow::Context;
use prometheus::Registry;
use tokio::sync::watch;

use crate::{
    cgroups::{CgroupNames, Hierarchies},
    cli::RunArgs,
    collect::Maps,
    export::{BuildInfo, Exporter},
    kernel::KernelInfo,
    probes::{self, Probes},
    web::{self, AppState},
};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    let kernel = KernelInfo::probe(&args.kernel.btf)?;
    tracing::info!(release = %kernel.release, generation = kernel.generation.describe(), "kernel");
    let options = probes::Options { mode: args.kernel.mode, stats_map_entries: args.kernel.stats_map_entries };
    let mut probes = Probes::load(&kernel, &options)?;
    for f in &probes.report.families {
        match f.attached() {
            Some(a) => tracing::info!(family = f.name, mode = a.name, "probe family attached"),
            None => tracing::warn!(family = f.name, "probe family NOT attached; see `mmuscope check`"),
        }
    }
    let log_task = spawn_ebpf_logger(&mut probes);

    let hierarchies = Hierarchies::discover();
    tracing::info!("cgroups: {}", hierarchies.describe());
    let registry = Registry::new();
    let exporter = Exporter::new(
        Maps::take(&mut probes, options.stats_map_entries)?,
        CgroupNames::new(hierarchies),
        kernel.events.clone(),
        probes.report.clone(),
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            kernel: kernel.release.clone(),
            generation: generation_label(&kernel),
        },
    );
    registry.register(Box::new(exporter)).context("registering the collector")?;
    registry
        .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
        .context("registering the process collector")?;

    let state =
        Arc::new(AppState { registry, report: probes.report.clone(), telemetry_path: args.telemetry_path.clone() });
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        match wait_for_signal().await {
            Ok(sig) => tracing::info!("{sig}: shutting down"),
            Err(e) => tracing::error!("signal handling failed: {e:#}; shutting down"),
        }
        let _ = stop_tx.send(true);
    });
    let served = web::serve(&args.listen, state, stop_rx).await;
    if let Some(t) = log_task {
        t.abort();
    }
    drop(probes); // detaches every link and unloads the programs
    tracing::info!("probes detached");
    served
}

fn generation_label(kernel: &KernelInfo) -> &'static str {
    match kernel.generation {
        crate::kernel::Generation::InvalidateRange => "invalidate_range",
        crate::kernel::Generation::ArchInvalidateSecondaryTlbs => "arch_invalidate_secondary_tlbs",
        crate::kernel::Generation::Unknown => "unknown",
    }
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Forwards aya-log records from the programs to `tracing` (via the `log` bridge).
fn spawn_ebpf_logger(probes: &mut Probes) -> Option<tokio::task::JoinHandle<()>> {
    let logger = match aya_log::EbpfLogger::init(probes.ebpf_mut()) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("eBPF log forwarding unavailable: {e}");
            return None;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd for as long as the AsyncFd owns the logger,
    // and `as_raw_fd` always returns that same fd.
    let registered = unsafe { tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!("eBPF log forwarding unavailable: {e}");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    }))
}
