//! Tier `fleet`: the project's Debian package on real fleet hosts — booted Debian systems with systemd as PID 1 and
//! a stock Debian kernel in fentry mode, under QEMU (TCG) — scraped across a network by this machine's Prometheus.
//!
//! For each [`SYSTEMS`] entry: the root filesystem image (`crate::vm::rootfs`, cached by its inputs), the kernel of
//! the `vm` tier's cache, a data disk with the `.deb` and the workload generator, and a Prometheus here scraping the
//! guest's port 9476 through QEMU's `hostfwd`. Then ([`host`]): `dpkg -i`, `systemctl is-active`, readiness through
//! Type=notify, `/proc/$MAINPID/status` (Seccomp 2, no capability, the package's user), every probe family in fentry
//! mode, `systemd-analyze security` live, a KVM workload in a `systemd-run --scope` counted exactly under the scope's
//! cgroup (the scope is gone before anything scrapes), the same figure from a Prometheus query, `systemctl reload`,
//! `systemctl stop` leaving no BPF object, a restart with pinned maps whose counters continue (with the system call
//! filter set to kill), no SIGSYS or denial in the journal, and `dpkg --purge` leaving nothing. The outputs go to
//! `target/fleet/report.md`.
//!
//! `MMUSCOPE_FLEET_SYSTEMS=bookworm` (comma-separated suites) runs a subset.

mod exposition;
mod host;
mod report;

use std::{env, fs, path::PathBuf, process::Command, sync::Mutex, thread, time::Instant};

use anyhow::{Context as _, Result, bail};

use super::{Context, Outcome, ship::tools};
use crate::{privilege::Privilege, process, progress, workspace::Profile};

/// A fleet host: a Debian release and the kernel series it runs (a request of the `vm` harness).
pub struct System {
    pub suite: &'static str,
    pub kernel: &'static str,
}

/// Debian 12 with its 6.1 kernel (the pre-6.6 notifier generation, systemd 252) and Debian 13 (systemd 257) with
/// Debian's 6.12 (6.6+). The 6.12 is Debian 12's build of it (`linux-image-6.12-amd64`, bookworm-security), the one the
/// `vm` tier already has in its cache: the same kernel version as Debian 13's own, built with gcc-12 instead of
/// gcc-14; fetching Debian 13's build as well cost the tier about 200 s for no difference the agent can see.
pub const SYSTEMS: &[System] =
    &[System { suite: "bookworm", kernel: "6.1" }, System { suite: "trixie", kernel: "linux-image-6.12-amd64" }];

pub fn run(ctx: &Context) -> Result<Outcome> {
    let ws = ctx.ws;
    if !Privilege::current().is_root() {
        let reason = "not root: mmdebstrap builds the root filesystems as root".to_string();
        if ctx.ci {
            bail!("prerequisite missing in CI: {reason}");
        }
        return Ok(Outcome::Skipped(reason));
    }
    let started = Instant::now();
    let dir = ws.target_dir().join("fleet");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;

    // The package as it ships: the release build, packed like the ship tier packs it (stripped, -dbgsym apart).
    ctx.release.path(ws)?;
    let deb = package(ws, &dir.join("deb"))?;
    let workload = ws.binary(Profile::Debug, "mmuscope-workload");
    let data = host::data_disk(&dir.join("data"), &deb, &workload)?;
    let deb_name = deb.file_name().context("deb name")?.to_string_lossy().into_owned();

    let wanted: Option<Vec<String>> =
        env::var("MMUSCOPE_FLEET_SYSTEMS").ok().map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    // The hosts run side by side, one vCPU each (TCG is single-threaded per vCPU); their kernels and images are
    // prepared one after the other, the second while the first host boots.
    let prepare = Mutex::new(());
    let selected: Vec<&System> =
        SYSTEMS.iter().filter(|s| wanted.as_ref().is_none_or(|w| w.iter().any(|n| n == s.suite))).collect();
    let reports: Vec<report::HostReport> = thread::scope(|scope| {
        let handles: Vec<_> = selected
            .iter()
            .map(|system| {
                let (data, deb_name, dir, prepare) = (&data, &deb_name, &dir, &prepare);
                scope.spawn(move || {
                    say(format!("{}: Debian {} with the {} kernel", system.suite, system.suite, system.kernel));
                    let report = host::check(ws, system, data, deb_name, &dir.join(system.suite), prepare);
                    say(format!(
                        "{}: {} in {:.0} s ({} problem(s))",
                        system.suite,
                        if report.problems.is_empty() { "passed" } else { "FAILED" },
                        report.seconds,
                        report.problems.len()
                    ));
                    report
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a fleet host's thread panicked")).collect()
    });
    let mut text = format!(
        "# Fleet hosts: the Debian package under systemd as PID 1\n\nPackage {deb_name}; tier wall time {:.0} s.\n\n",
        started.elapsed().as_secs_f64()
    );
    for r in &reports {
        text.push_str(&r.markdown());
    }
    let path = dir.join("report.md");
    fs::write(&path, &text)?;
    say(format!("report: {}", ws.display(&path)));
    for r in &reports {
        for c in &r.comparisons {
            println!("{:<9} {:<110} expected {:>5} observed {:>5}", r.system, c.what, c.expected, c.observed);
        }
    }
    let problems: Vec<String> =
        reports.iter().flat_map(|r| r.problems.iter().map(move |p| format!("{}: {p}", r.system))).collect();
    if reports.is_empty() {
        bail!("no system selected (MMUSCOPE_FLEET_SYSTEMS={wanted:?})");
    }
    if !problems.is_empty() {
        bail!("{} problem(s) on the fleet hosts:\n  - {}", problems.len(), problems.join("\n  - "));
    }
    Ok(Outcome::Passed)
}

/// `cargo deb --no-build --dbgsym --fast` into `out`; the `.deb`.
fn package(ws: &crate::workspace::Workspace, out: &std::path::Path) -> Result<PathBuf> {
    let cargo_deb = tools::cargo_deb(ws)?;
    let _ = fs::remove_dir_all(out);
    fs::create_dir_all(out)?;
    process::run(
        Command::new(cargo_deb)
            .current_dir(&ws.root)
            .args(["-p", "mmuscope", "--no-build", "--dbgsym", "--fast", "--output"])
            .arg(out),
    )?;
    fs::read_dir(out)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("cargo-deb made no .deb")
}

fn say(message: impl std::fmt::Display) {
    progress::say("fleet", message);
}
