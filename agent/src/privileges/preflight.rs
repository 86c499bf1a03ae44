//! Before anything is loaded: does this process hold the capabilities loading and attaching need? A missing one
//! stops the agent with its name (exit status [`EXIT_MISSING_CAPABILITIES`]) instead of a bare EPERM later, or a
//! required family silently failing to attach.
//!
//! Needed: CAP_BPF (maps, programs) and CAP_PERFMON (tracing programs, perf-event attachment) — either can be
//! CAP_SYS_ADMIN, the only one before Linux 5.8 — and CAP_DAC_READ_SEARCH when tracefs (mode 0700, owned by root)
//! is not readable otherwise, as for a non-root user (classic tracepoints are attached by the ids tracefs lists).
//! Not needed on ≥ 5.11: CAP_SYS_RESOURCE (memlock; BPF memory is charged to the cgroup). Optional: CAP_SYSLOG, for
//! kernel addresses in /proc/kallsyms (the subscriber inventory names subscribers and finds the callbacks it times
//! by them; without it they are `unknown` and untimed, which the log says), so it is not checked here.

use std::ffi::CString;

use super::caps::{self, CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, bit};

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;
/// Documented in the README (Privileges) and `deploy/systemd/mmuscope.service`.
pub const EXIT_MISSING_CAPABILITIES: i32 = 4;

#[derive(Debug, thiserror::Error)]
#[error(
    "missing capabilities: {}; run as root, or grant exactly these (systemd: AmbientCapabilities=; \
     setpriv --inh-caps=+bpf,+perfmon,+dac_read_search --ambient-caps=+bpf,+perfmon,+dac_read_search)",
    .0.join(", ")
)]
pub struct MissingCapabilities(pub Vec<String>);

/// `Err` naming every missing capability and what it is for.
pub fn check() -> Result<(), MissingCapabilities> {
    let Ok(current) = caps::current_thread() else { return Ok(()) }; // capget failing: let the load say why
    let has = |cap: u32| cap <= caps::last_cap() && current.effective & bit(cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF (creating maps, loading programs)".to_string());
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON (loading tracing programs, attaching to tracepoints)".to_string());
    }
    // The mount point itself can be stat'ed by anyone; what is below it only with search permission.
    let tracefs = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"].into_iter().map(std::path::Path::new);
    if let Some(dir) =
        tracefs.clone().find(|d| d.join("events").is_dir()).or_else(|| tracefs.into_iter().find(|d| d.is_dir()))
        && !readable(dir)
        && !has(CAP_DAC_READ_SEARCH)
        && !has(CAP_DAC_OVERRIDE)
    {
        missing.push(format!("CAP_DAC_READ_SEARCH (reading tracepoint ids in {}, mode 0700)", dir.display()));
    }
    if missing.is_empty() { Ok(()) } else { Err(MissingCapabilities(missing)) }
}

fn readable(dir: &std::path::Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: access(2) with a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::X_OK) == 0 }
}
