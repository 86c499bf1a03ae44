//! What the running kernel lets us attach, found out by trying rather than by version:
//! a trivial fentry program is loaded (never attached); kprobes need the kprobe PMU;
//! tracepoints need their tracefs event directory ([`super::tracefs`]); both need perf_event_open(2), which a
//! dummy event shows.

use std::path::Path;

use super::tracefs;

/// Outcome of one capability probe: available, or why not.
pub type Capability = Result<(), String>;

/// kprobes are attached through the `kprobe` perf PMU (or legacy `kprobe_events`), with perf_event_open(2).
pub fn kprobes() -> Capability {
    let present = Path::new("/sys/bus/event_source/devices/kprobe/type").exists()
        || tracefs::locate().is_ok_and(|t| t.path().join("kprobe_events").exists());
    if !present {
        return Err("no kprobe PMU (/sys/bus/event_source/devices/kprobe) and no kprobe_events: kernel built without \
                    CONFIG_KPROBES"
            .into());
    }
    perf_events()
}

/// Whether this process may call perf_event_open(2) at all, which kprobes and classic tracepoints are attached
/// with, found out by opening a user-space-only dummy software event. Debian and Ubuntu kernels add
/// `kernel.perf_event_paranoid=3` (their default), which refuses every perf_event_open(2) to a caller without
/// CAP_SYS_ADMIN — CAP_PERFMON does not count there. fentry, `tp_btf` and raw tracepoints do not use it.
pub fn perf_events() -> Capability {
    match open_dummy_event() {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EACCES) || e.raw_os_error() == Some(libc::EPERM) => {
            let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "?".into());
            Err(format!(
                "perf_event_open(2) refused ({e}) with kernel.perf_event_paranoid={paranoid}: above 2 (the Debian and \
                 Ubuntu default is 3) it needs CAP_SYS_ADMIN, CAP_PERFMON is not enough. Set \
                 kernel.perf_event_paranoid=2 (a sysctl.d file), or give the agent CAP_SYS_ADMIN (docs/hardening.md)"
            ))
        }
        Err(e) => Err(format!("perf_event_open(2) of a dummy event failed: {e}")),
    }
}

/// `perf_event_open(PERF_TYPE_SOFTWARE / PERF_COUNT_SW_DUMMY, this process, any CPU, user space only)`, closed again.
fn open_dummy_event() -> std::io::Result<()> {
    /// `struct perf_event_attr` up to `PERF_ATTR_SIZE_VER0` (64 bytes), which every kernel accepts.
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        kind: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
    }
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_DUMMY: u64 = 9;
    // disabled (bit 0), exclude_kernel (bit 5), exclude_hv (bit 6)
    const FLAGS: u64 = 1 | (1 << 5) | (1 << 6);
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    let attr = Attr {
        kind: PERF_TYPE_SOFTWARE,
        size: size_of::<Attr>() as u32,
        config: PERF_COUNT_SW_DUMMY,
        flags: FLAGS,
        ..Attr::default()
    };
    // SAFETY: `attr` is a valid perf_event_attr of the size it declares; the returned fd is closed below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const Attr,
            0 as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a file descriptor we own.
    unsafe { libc::close(fd as libc::c_int) };
    Ok(())
}

/// Whether tracefs has `events/<group>/<name>`; classic tracepoints are attached with perf_event_open(2).
pub fn tracepoint(group: &str, name: &str) -> Capability {
    perf_events()?;
    let dir = tracefs::locate()?;
    if dir.path().join("events").join(group).join(name).is_dir() {
        Ok(())
    } else {
        Err(format!("tracepoint {group}:{name} does not exist (module not loaded?)"))
    }
}
