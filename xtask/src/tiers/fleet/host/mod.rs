//! One fleet host: a booted Debian system (systemd as PID 1, a stock kernel in fentry mode) on which the project's
//! Debian package is installed, run by systemd under its unit, scraped by this machine's Prometheus through the
//! forwarded port, reloaded, restarted, stopped and purged. Every output the issue's acceptance asks for goes into
//! the [`HostReport`]; every deviation is a problem there. The checks run in [`Host::all_checks`]'s order; those of
//! the unit's life are in [`unit`](mod@unit), those of what the running agent shows in [`observed`].

mod observed;
mod unit;

use std::{
    collections::BTreeSet,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde_json::Value;

use super::{System, report::HostReport};
use crate::{
    tiers::ship::{daemon, prometheus::Prometheus},
    vm::{
        self,
        system::{Boot, SystemGuest},
    },
    workspace::Workspace,
};

/// The agent's port (deploy/systemd/mmuscope.toml) inside the guest.
const AGENT_PORT: u16 = 9476;
/// `systemd-analyze security`'s limit, as in the ship tier.
const MAX_EXPOSURE: f64 = 2.5;
const ITERATIONS: u64 = 200;
const MEMORY_MIB: u32 = 2048;
/// One vCPU, as in the vm tier (two occasionally soft-lock under multi-threaded TCG).
const CPUS: u32 = 1;
const BOOT_LIMIT: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(240);
/// Kernel and audit messages that mean the unit's sandbox refused the agent something.
const DENIALS: &str = r#"SIGSYS|status=31/SYS|type=1326|apparmor="DENIED"|avc: +denied"#;

/// Boots `system` and runs every check; never fails as a whole: what went wrong is in the report. `prepare` is held
/// while the kernel is fetched and the image built (the private apt state and the CPU are shared), not while the
/// guest runs.
pub fn check(
    ws: &Workspace,
    system: &System,
    data_disk: &Path,
    deb: &str,
    dir: &Path,
    prepare: &Mutex<()>,
) -> HostReport {
    let started = Instant::now();
    let mut report = HostReport { system: system.suite.to_string(), started: Some(started), ..HostReport::default() };
    if let Err(e) = run(ws, system, data_disk, deb, dir, prepare, &mut report) {
        report.problem(format!("{e:#}"));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn run(
    ws: &Workspace,
    system: &System,
    data_disk: &Path,
    deb: &str,
    dir: &Path,
    prepare: &Mutex<()>,
    report: &mut HostReport,
) -> Result<()> {
    let (kernel, image) = {
        let _one_at_a_time = prepare.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = vm::kernels::fetch(ws, &system.kernel.parse()?, false)?;
        let image = vm::rootfs::ensure(ws, system.suite, &kernel)?;
        (kernel, image)
    };
    report.kernel = format!("{} ({} {})", kernel.meta.release, kernel.meta.package, kernel.meta.version);
    report.image = format!("{} ({}, key {})", system.suite, ws.display(&image.disk()), image.meta.key);

    let forwarded = daemon::free_port()?.port();
    let target = format!("127.0.0.1:{forwarded}");
    let instance = format!("{}-fleet:{AGENT_PORT}", system.suite);
    let mut guest = SystemGuest::boot(&Boot {
        kernel: &kernel,
        image: &image,
        dir: &dir.join("guest"),
        data_disk: Some(data_disk),
        forwards: &[(forwarded, AGENT_PORT)],
        memory_mib: MEMORY_MIB,
        cpus: CPUS,
        ready_limit: BOOT_LIMIT,
    })?;
    report.boot_seconds = guest.boot_seconds;
    let mut host = Host {
        guest: &mut guest,
        report,
        agent: format!("http://{target}"),
        target,
        prometheus: None,
        prometheus_dir: dir.join("prometheus"),
        instance,
    };
    let result = host.all_checks(deb);
    if let Err(e) = guest.shutdown() {
        report.problem(format!("{e:#}"));
    }
    result
}

struct Host<'a> {
    guest: &'a mut SystemGuest,
    report: &'a mut HostReport,
    /// The agent as this machine reaches it: through QEMU's forwarded port (`target`).
    agent: String,
    target: String,
    /// Started after the first workload: nothing may scrape while its scope exists, as with a real scrape
    /// interval longer than a short job.
    prometheus: Option<Prometheus>,
    prometheus_dir: std::path::PathBuf,
    instance: String,
}

/// The BPF objects of the kernel: program, map and link ids.
#[derive(Clone, Debug, Default, PartialEq)]
struct BpfIds {
    progs: BTreeSet<u64>,
    maps: BTreeSet<u64>,
    links: BTreeSet<u64>,
}

impl Host<'_> {
    fn all_checks(&mut self, deb: &str) -> Result<()> {
        let state = self.guest.run("systemctl is-system-running --wait; systemd-analyze", SHORT)?;
        let uname = self.uname()?;
        self.report.section("the booted system", format!("{uname}{}", state.output));
        if !state.output.starts_with("running") {
            let failed = self.guest.run("systemctl --failed --no-pager", SHORT)?;
            self.report.problem(format!("the system is not `running`:\n{}", failed.output));
        }
        self.guest.ok("mkdir -p /srv/fleet && mount -o ro /dev/vdb /srv/fleet", SHORT)?;
        let baseline = self.bpf_ids()?;

        self.install(deb)?;
        self.readiness()?;
        self.process()?;
        self.probes("as installed", false)?;
        self.security()?;
        let scope = self.workload(1, false, false)?;
        self.scraped_by_prometheus(&scope)?;
        self.reload()?;
        self.stop_leaves_nothing(&baseline, "systemctl stop", false)?;
        self.operator_settings()?;
        self.probes("with kernel.perf_event_paranoid=2", true)?;
        let held = self.workload(2, true, true)?;
        self.workload(3, false, false)?;
        self.restart_continues(&held)?;
        self.end_scope(2)?;
        self.stop_leaves_nothing(&baseline, "systemctl stop (maps pinned)", true)?;
        self.no_restart_loop()?;
        self.journal()?;
        self.purge(&baseline)
    }

    fn uname(&mut self) -> Result<String> {
        self.guest.ok(". /etc/os-release; echo \"$PRETTY_NAME, $(uname -r), $(systemctl --version | head -1)\"", SHORT)
    }

    /// The kernel's BPF objects except systemd's own (named `sd_…`: device policies, IP firewalls of units that
    /// start and stop meanwhile).
    fn bpf_ids(&mut self) -> Result<BpfIds> {
        let mut ids = BpfIds::default();
        for (kind, set) in [("prog", &mut ids.progs), ("map", &mut ids.maps), ("link", &mut ids.links)] {
            let out = self.guest.ok(&format!("bpftool -j {kind} show"), SHORT)?;
            let v: Value = serde_json::from_str(out.trim()).with_context(|| format!("bpftool -j {kind} show"))?;
            let ours = |o: &&Value| !o["name"].as_str().is_some_and(|n| n.starts_with("sd_"));
            set.extend(v.as_array().into_iter().flatten().filter(ours).filter_map(|o| o["id"].as_u64()));
        }
        Ok(ids)
    }
}

/// The `.deb` and the workload generator on a data disk (`/dev/vdb` in the guest).
pub fn data_disk(dir: &Path, deb: &Path, workload: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stripped = dir.join("mmuscope-workload");
    vm::exec::output(
        std::process::Command::new("objcopy").arg("--strip-debug").arg(workload).arg(&stripped),
        Duration::from_secs(120),
    )?;
    let name = deb.file_name().context("deb name")?.to_string_lossy().into_owned();
    vm::system::data_disk(dir, &[(deb.to_path_buf(), name), (stripped, "mmuscope-workload".into())])
}
