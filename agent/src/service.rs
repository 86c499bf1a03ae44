//! `mmuscope run`: probe the kernel, attach, serve until SIGINT/SIGTERM, then detach. SIGHUP reloads the config
//! file (`Live::reload`): what can change at run time does, the rest is logged as needing a restart.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;

use crate::{
    api::ApiState,
    bpfstats::ProgramStats,
    cgroups::{CgroupNames, Hierarchies},
    cli::RunArgs,
    collect::Maps,
    export::{BuildInfo, Exporter, Scrape},
    kernel::{KernelInfo, symbols::SymbolSnapshot},
    probes::{self, Probes},
    web::{self, AppState},
    webconfig::WebConfigSource,
};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Signal handlers first, so that a SIGHUP during start-up does not take the default action (exit) either.
    let signals = Signals::new().context("installing signal handlers")?;
    // What SIGHUP compares a reloaded file with: the settings as parsed at start-up.
    let baseline = crate::config::load_run(&std::env::args_os().collect::<Vec<_>>()).map(|(_, m)| m).ok();
    // A bad web config must stop the agent before it attaches anything.
    let web_config =
        Arc::new(WebConfigSource::new(args.web_config.clone()).map_err(|e| crate::config::BadConfig(e.into()))?);
    crate::privileges::preflight::check()?;
    let kernel = args.kernel.probe()?;
    tracing::info!(release = %kernel.release, generation = kernel.generation.describe(), "kernel");
    let options = probes::Options {
        mode: args.kernel.mode,
        stats_map_entries: args.kernel.stats_map_entries,
        slow_min_duration: Some(args.kernel.slow_min_duration),
        pin: args.pin.clone(),
        stacks: !args.stacks_disable,
        keep_attached: args.kernel.probes_keep_attached,
        opt_in: args.kernel.opt_in(),
    };
    let mut probes = Probes::load(&kernel, &options)?;
    for f in &probes.report.families {
        match (f.attached(), f.why_not_attached()) {
            (Some(a), _) => tracing::info!(family = f.name(), mode = a.name, "probe family attached"),
            (None, why) if f.switched_off() => {
                tracing::info!(family = f.name(), why = why.unwrap_or_default(), "probe family off")
            }
            (None, why) => tracing::warn!(
                family = f.name(),
                required = f.required,
                why = why.unwrap_or_default(),
                "probe family NOT attached; its metrics stay empty (`mmuscope check` shows the plan)"
            ),
        }
    }
    if args.probes_strict {
        probes.require_all()?;
    }
    let log_task = spawn_ebpf_logger(&mut probes);

    let hierarchies = Hierarchies::discover();
    tracing::info!("cgroups: {}", hierarchies.describe());
    let program_stats = ProgramStats::new(probes.ebpf_mut(), args.bpf_run_stats);
    let cgroup_names =
        CgroupNames::with_host_root(hierarchies, args.cgroups.policy(), &args.cgroups.kubernetes_host_root);
    // The one start-up copy of kallsyms' text symbols: after loading (it then lists our own programs too) and before
    // the drop (kallsyms shows addresses to privileged readers only). The first sweep and the stacks name from it.
    let symbols = SymbolSnapshot::snapshot();
    // First sweep while privileged (kallsyms shows addresses to privileged openers only).
    let sweeper = crate::subscribers::Sweeper::start(
        &mut probes,
        kernel.generation,
        options.mode,
        args.kernel.probes_late_callbacks,
        symbols.reopen(),
    )
    .inspect_err(|e| tracing::warn!("subscriber inventory unavailable: {e:#}"))
    .ok()
    .flatten();
    let arming = probes.arming.clone();
    if sweeper.is_none() {
        arming.keep_attached("no subscriber inventory, so the agent cannot tell when it is needed");
    }
    // Before the drop: whether the hooks can be attached again with the capabilities kept after it.
    for group in arming.all() {
        group.check_unprivileged(|attach| crate::privileges::with_empty_effective_set(attach));
    }
    let exporter = Exporter::new(
        Maps::take(&mut probes, options.stats_map_entries)?,
        cgroup_names,
        kernel.events.clone(),
        probes.report.clone(),
        BuildInfo {
            version: env!("CARGO_PKG_VERSION"),
            revision: crate::version::REVISION,
            kernel: kernel.release.clone(),
            generation: generation_label(&kernel),
        },
        kernel.layout.layout.interval_fields != 0,
    )
    .with_subscribers(sweeper);
    let exporter = Arc::new(exporter);
    match exporter.forget_vanished_cgroups() {
        Ok(0) => {}
        Ok(n) => tracing::info!(cgroups = n, "pinned counters of cgroups removed before this start dropped"),
        Err(e) => tracing::warn!("checking the pinned counters' cgroups failed: {e:#}"),
    }
    match &probes.births {
        Ok(()) => match crate::births::spawn_reader(&mut probes, {
            let exporter = exporter.clone();
            move |path: &str| exporter.learn_cgroup(path)
        }) {
            Ok(_task) => tracing::info!("cgroup names: taken when a cgroup is created (tp_btf cgroup_mkdir)"),
            Err(e) => tracing::warn!("cgroup names: from cgroupfs walks only ({e:#})"),
        },
        Err(why) => tracing::warn!(
            why = why.as_str(),
            "cgroup names: from cgroupfs walks only; a cgroup removed before the next scrape is counted as `unknown`"
        ),
    }
    if arming.all().iter().any(|a| a.on_demand()) {
        // An event that only an observed mm makes found its group detached: attach it now (one record per event).
        let requests = {
            let arming = arming.clone();
            let stopped = "the on-demand hooks are attached at inventory sweeps only";
            crate::ringbuf::spawn_reader(&mut probes, mmuscope_abi::names::ARM_REQUESTS, stopped, move |record| {
                let raw = record.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_ne_bytes);
                match raw.and_then(mmuscope_abi::ArmRequest::from_raw) {
                    Some(mmuscope_abi::ArmRequest::ForkCopy) => {
                        arming.fork_copy.set(true, "a process with pinned pages forked while it was detached")
                    }
                    Some(mmuscope_abi::ArmRequest::Subscriptions) => {
                        arming.subscriptions.set(true, "a notifier was registered while they were detached")
                    }
                    None => tracing::warn!(?raw, "unknown attach request"),
                }
            })
        };
        if let Err(e) = requests {
            arming.keep_attached(&format!("its attach requests cannot be read ({e:#})"));
        }
    }
    let scrape = Scrape::new(exporter.clone(), program_stats);
    let slow = slow_source(&mut probes, &options);
    let stacks = crate::stacks::Stacks::take(&mut probes, symbols)
        .inspect_err(|e| tracing::warn!("/api/v1/stacks unavailable: {e:#}"))
        .ok()
        .map(Arc::new);
    // The planner's mapped BTF and its index are not needed once attached.
    drop(kernel);
    release_free_heap();
    // Attached, and every fd that needed privileges is held (maps, programs, BPF_ENABLE_STATS): drop them all.
    crate::privileges::drop_after_attach(probes.ebpf_mut(), args.kernel.probes_late_callbacks)?;
    crate::privileges::ready(&probes.report);

    let api = ApiState::new(exporter);
    let api = match slow {
        Some(source) => api.with_slow(source),
        None => api,
    };
    // With the capture off, the maps and the symbol snapshot stay: `/api/v1/slow` names its records' frames with it.
    let api = match stacks {
        Some(stacks) => api.with_stacks(stacks),
        None => api,
    };
    let api = Arc::new(if args.stacks_disable { api.with_stack_capture_off() } else { api });
    let access = Arc::new(web::Access::new(&args.access));
    let state = Arc::new(AppState {
        collector: web::Collector::spawn(scrape).context("starting the scrape thread")?,
        scrapes: Default::default(),
        report: probes.report.clone(),
        telemetry_path: args.telemetry_path.clone(),
        api,
        access: access.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let live = Live { args: args.clone(), baseline, access, web_config: web_config.clone() };
    tokio::spawn(async move {
        match signals.until_stop(live).await {
            Ok(sig) => tracing::info!("{sig}: shutting down"),
            Err(e) => tracing::error!("signal handling failed: {e:#}; shutting down"),
        }
        let _ = stop_tx.send(true);
    });
    let served = web::serve(&args.listen, web::router(state), web_config, stop_rx).await;
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

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Reloads on every SIGHUP; returns the name of the signal that asks the agent to stop.
    async fn until_stop(mut self, mut live: Live) -> anyhow::Result<&'static str> {
        loop {
            tokio::select! {
                _ = self.term.recv() => return Ok("SIGTERM"),
                _ = self.int.recv() => return Ok("SIGINT"),
                _ = self.hup.recv() => live.reload(),
            }
        }
    }
}

/// The settings in force, for SIGHUP.
struct Live {
    args: RunArgs,
    /// How the settings were given at start-up. Reloads are compared with it, so keys that need a restart are
    /// reported on every SIGHUP until the restart, and live keys are applied whenever they differ.
    baseline: Option<clap::ArgMatches>,
    access: Arc<web::Access>,
    web_config: Arc<WebConfigSource>,
}

impl Live {
    fn reload(&mut self) {
        // The web config file is re-read whenever it changed, SIGHUP or not; this makes that happen now.
        self.web_config.current();
        let Some(file) = self.args.config_file.clone() else {
            tracing::info!("SIGHUP: no --config.file to reload (the web config file is re-read when it changes)");
            return;
        };
        let (new_args, new_matches) = match crate::config::load_run(&std::env::args_os().collect::<Vec<_>>()) {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(file = %file.display(), "SIGHUP: {e:#}; keeping the previous settings");
                return;
            }
        };
        let plan = self.baseline.as_ref().map(|old| crate::config::reload::plan(old, &new_matches)).unwrap_or_default();
        let applied = self.apply(&new_args);
        if !plan.needs_restart.is_empty() {
            tracing::warn!(
                keys = plan.needs_restart.join(","),
                "SIGHUP: changed settings need a restart to take effect; their old values stay in force until then"
            );
        }
        tracing::info!(file = %file.display(), applied = applied.join(","), "SIGHUP: configuration reloaded");
    }

    /// Applies the keys of [`crate::config::reload::LIVE`]; returns those whose value changed.
    fn apply(&mut self, new: &RunArgs) -> Vec<&'static str> {
        let old_access = (self.args.access.disable_process_details, self.args.access.health_requires_auth);
        let changed = [
            ("log.level", new.log.level != self.args.log.level),
            ("web.disable-process-details", new.access.disable_process_details != old_access.0),
            ("web.health-requires-auth", new.access.health_requires_auth != old_access.1),
        ];
        debug_assert!(changed.iter().map(|(k, _)| *k).eq(crate::config::reload::LIVE.iter().copied()));
        let (old_level, new_level) = (self.args.log.level, new.log.level);
        if new_level != old_level {
            // Said while the more verbose of the two levels is in force, so that it shows.
            let say = |now: &str| tracing::info!("log level {} -> {now}", old_level.as_str());
            if new_level > old_level {
                say(new_level.as_str());
            }
            match crate::logging::set_level(new_level) {
                Ok(now) if new_level < old_level => say(&now),
                Ok(_) => {}
                Err(e) => tracing::error!("changing the log level failed: {e}"),
            }
        }
        self.access.set(&new.access);
        self.args.log.level = new.log.level;
        self.args.access = new.access.clone();
        changed.iter().filter(|(_, c)| *c).map(|(k, _)| *k).collect()
    }
}

/// Forwards aya-log records from the programs to `tracing` (via the `log` bridge).
/// The slow-bracket log and its reader task, where brackets are timed (fentry or kprobe mode).
fn slow_source(probes: &mut Probes, options: &probes::Options) -> Option<crate::api::SlowSource> {
    let timed =
        probes.report.attached_in(probes::families::brackets::ID, &[probes::Mode::Fentry, probes::Mode::Kprobe]);
    let min = options.slow_min_duration?;
    if !timed {
        return None;
    }
    let log = Arc::new(crate::slow::SlowLog::default());
    match crate::slow::spawn_reader(probes, log.clone()) {
        Ok(_task) => Some(crate::api::SlowSource { log, min_ns: u64::try_from(min.as_nanos()).unwrap_or(u64::MAX) }),
        Err(e) => {
            tracing::warn!("/api/v1/slow unavailable: {e:#}");
            None
        }
    }
}

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

/// Hands the heap pages freed after start-up (aya's parsed BTF and the object load, ~20 MiB) back to the kernel:
/// glibc's malloc keeps freed memory in its arenas, so without this the agent's RSS stays at its start-up peak
/// (BENCHMARKS.md). Not done after scrapes: the next collection would fault its heap back in (measured: p99 ~170 ms
/// at 10k cgroups).
fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap memory to the kernel; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
