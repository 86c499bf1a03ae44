//! What the running kernel lets us attach, found out by trying rather than by version:
//! a trivial fentry program is loaded (never attached); kprobes need the kprobe PMU;
//! tracepoints need their tracefs event directory ([`super::tracefs`]).

use std::path::Path;

use super::tracefs;

/// Outcome of one capability probe: available, or why not.
pub type Capability = Result<(), String>;

/// kprobes are attached through the `kprobe` perf PMU (or legacy `kprobe_events`).
pub fn kprobes() -> Capability {
    if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        return Ok(());
    }
    if tracefs::locate().is_ok_and(|t| t.path().join("kprobe_events").exists()) {
        return Ok(());
    }
    Err("no kprobe PMU (/sys/bus/event_source/devices/kprobe) and no kprobe_events: kernel built without CONFIG_KPROBES".into())
}

/// Whether tracefs has `events/<group>/<name>`.
pub fn tracepoint(group: &str, name: &str) -> Capability {
    let dir = tracefs::locate()?;
    if dir.path().join("events").join(group).join(name).is_dir() {
        Ok(())
    } else {
        Err(format!("tracepoint {group}:{name} does not exist (module not loaded?)"))
    }
}
