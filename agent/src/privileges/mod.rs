//! What the agent does once everything that needs privileges is done (probes attached, map and program fds and the
//! BPF_ENABLE_STATS fd held): drop every capability on every thread, then tell systemd it is ready.
//!
//! After attaching, the agent only uses bpf(2) on file descriptors it already holds (map lookups, program info)
//! and reads cgroupfs and procfs. Since Linux 5.19 those bpf(2) commands need no capability; before, with
//! `kernel.unprivileged_bpf_disabled` set (the default on most distributions), every bpf(2) command needs
//! CAP_BPF (CAP_SYS_ADMIN before 5.8). Which case applies is found out by trying, never from the version: the
//! same kind of call is made once with an empty effective set, and CAP_BPF is kept only if that fails.

mod caps;
mod notify;
pub mod preflight;
mod threads;

use std::{io, os::fd::AsFd};

use anyhow::{Context, Result};
use aya::Ebpf;

use crate::probes::PlanReport;
use caps::{CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, Caps, bit};

pub use notify::ready;

/// Drops every capability the agent no longer needs from every thread; returns the mask it had to keep.
/// `late_kprobes` (`--probes.late-callbacks`): keep, in the permitted set only, what opening a kprobe needs
/// ([`late_kprobe_caps`]); [`with_permitted_raised`] makes it effective for one call.
pub fn drop_after_attach(ebpf: &Ebpf, late_kprobes: bool) -> Result<u64> {
    let before = caps::current_thread().context("capget")?;
    let keep = needed_for_reading(ebpf, before)?;
    let later = if late_kprobes { late_kprobe_caps(before.permitted) } else { 0 };
    let caps = Caps { effective: keep, permitted: keep | later, inheritable: 0 };
    threads::apply_to_every_thread(caps).context("dropping capabilities")?;
    if let Err(e) = read_probe(ebpf) {
        anyhow::bail!("bpf(2) on our own fds fails after dropping capabilities (kept {keep:#x}): {e}");
    }
    if late_kprobes {
        tracing::info!(
            effective = format!("{keep:#x}"),
            permitted = format!("{:#x}", keep | later),
            "--probes.late-callbacks: kept in the permitted set what opening a kprobe needs, raised only while \
             attaching one"
        );
    }
    match keep {
        0 => tracing::info!(before = format!("{:#x}", before.effective), "dropped every capability"),
        _ => tracing::info!(
            kept = format!("{keep:#x}"),
            "dropped every capability but the one this kernel requires for bpf(2) on our own fds \
             (kernel.unprivileged_bpf_disabled before Linux 5.19)"
        ),
    }
    Ok(keep)
}

/// What opening a kprobe after start-up needs, of what `permitted` holds: CAP_PERFMON (CAP_SYS_ADMIN before 5.8),
/// and CAP_SYS_ADMIN where `kernel.perf_event_paranoid` is above 2 (Debian's and Ubuntu's restriction: only
/// CAP_SYS_ADMIN may call perf_event_open at all).
fn late_kprobe_caps(permitted: u64) -> u64 {
    let paranoid: Option<i32> =
        std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").ok().and_then(|s| s.trim().parse().ok());
    let perfmon = if CAP_PERFMON <= caps::last_cap() { CAP_PERFMON } else { CAP_SYS_ADMIN };
    let mut want = bit(perfmon);
    if paranoid.is_none_or(|p| p > 2) {
        want |= bit(CAP_SYS_ADMIN);
    }
    if permitted & want != want {
        tracing::warn!(
            wanted = format!("{want:#x}"),
            held = format!("{:#x}", permitted & want),
            ?paranoid,
            "--probes.late-callbacks: the capabilities opening a kprobe needs are not all held, so callbacks met \
             after start-up may not be timed"
        );
    }
    permitted & want
}

/// Runs `f` with the calling thread's effective set raised to its permitted set (what [`drop_after_attach`] kept
/// for later), then lowers it again.
pub fn with_permitted_raised<T>(f: impl FnOnce() -> T) -> io::Result<T> {
    let current = caps::current_thread()?;
    caps::set_current_thread(Caps { effective: current.permitted, ..current })?;
    let out = f();
    caps::set_current_thread(current)?;
    Ok(out)
}

/// The capabilities reading maps and program infos needs on this kernel: none, or CAP_BPF (CAP_SYS_ADMIN on
/// kernels without CAP_BPF, or if that is all we hold). Tried on the calling thread with an empty effective set,
/// which is then restored.
fn needed_for_reading(ebpf: &Ebpf, current: Caps) -> Result<u64> {
    caps::set_current_thread(Caps { effective: 0, ..current }).context("emptying the effective set")?;
    let unprivileged = read_probe(ebpf);
    caps::set_current_thread(current).context("restoring the effective set")?;
    Ok(match unprivileged {
        Ok(()) => 0,
        // bpf_capable() is CAP_BPF or CAP_SYS_ADMIN (the only one before 5.8): keep the narrower one we hold.
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => [CAP_BPF, CAP_SYS_ADMIN]
            .into_iter()
            .filter(|cap| *cap <= caps::last_cap())
            .map(bit)
            .find(|mask| current.permitted & mask != 0)
            .unwrap_or(0),
        // Anything else is not about privileges; keep nothing and let the check after the drop report it.
        Err(_) => 0,
    })
}

/// Runs `f` on the calling thread with an empty effective capability set, then restores it: what the agent can
/// still do after [`drop_after_attach`] (which keeps at most CAP_BPF, only where reading maps needs it).
pub fn with_empty_effective_set(f: &mut dyn FnMut() -> io::Result<()>) -> io::Result<()> {
    let current = caps::current_thread()?;
    caps::set_current_thread(Caps { effective: 0, ..current })?;
    let result = f();
    caps::set_current_thread(current)?;
    result
}

/// BPF_OBJ_GET_INFO_BY_FD on one of our programs: goes through the same privilege gate as the map lookups and
/// program-info reads the agent makes at scrape time.
fn read_probe(ebpf: &Ebpf) -> io::Result<()> {
    let Some(fd) = ebpf.programs().find_map(|(_, p)| p.fd().ok().map(|fd| fd.as_fd())) else {
        return Err(io::Error::other("no program loaded to probe bpf(2) with"));
    };
    crate::bpfstats::run_stats(fd).map(drop)
}

/// One line for logs and systemd's STATUS=: the mode each family attached with.
fn describe(report: &PlanReport) -> String {
    let families: Vec<String> =
        report.families.iter().map(|f| format!("{}={}", f.name(), f.attached().map_or("none", |a| a.name))).collect();
    format!("probes attached: {}", families.join(" "))
}
