//! What the running kernel lets us attach, found out by trying rather than by version:
//! a trivial fentry program is loaded (never attached); kprobes need the kprobe PMU;
//! tracepoints need their tracefs event directory.

use std::path::{Path, PathBuf};

/// Outcome of one capability probe: available, or why not.
pub type Capability = Result<(), String>;

/// Directory with tracefs `events/`, if mounted anywhere we know of.
pub fn tracefs_dir() -> Option<PathBuf> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// kprobes are attached through the `kprobe` perf PMU (or legacy `kprobe_events`).
pub fn kprobes() -> Capability {
    if Path::new("/sys/bus/event_source/devices/kprobe/type").exists() {
        return Ok(());
    }
    if tracefs_dir().is_some_and(|t| t.join("kprobe_events").exists()) {
        return Ok(());
    }
    Err("no kprobe PMU (/sys/bus/event_source/devices/kprobe) and no kprobe_events: kernel built without CONFIG_KPROBES".into())
}

/// Whether tracefs has `events/<group>/<name>`.
pub fn tracepoint(group: &str, name: &str) -> Capability {
    let Some(dir) = tracefs_dir() else {
        return Err("tracefs is not mounted at /sys/kernel/tracing or /sys/kernel/debug/tracing".into());
    };
    if dir.join("events").join(group).join(name).is_dir() {
        Ok(())
    } else {
        Err(format!("tracepoint {group}:{name} does not exist (module not loaded?)"))
    }
}
