//! Where tracefs is, and mounting it where nobody has. Classic tracepoints (and legacy `kprobe_events`) are
//! attached by the ids tracefs lists, and aya looks for it at `/sys/kernel/tracing` and `/sys/kernel/debug/tracing`
//! only. A new machine may have neither mounted (no systemd, a minimal image, a container): then the agent, if it
//! holds CAP_SYS_ADMIN, mounts tracefs in a mount namespace of its own, so that the host's mounts stay as they were.
//!
//! The outcome is process-wide (the mount namespace belongs to the process), so it is found once: call [`locate`]
//! before any other thread starts, so that every thread shares the namespace it may create.

use std::{
    ffi::CString,
    path::{Path, PathBuf},
    sync::OnceLock,
};

/// The paths aya's tracepoint loader reads, in its order.
pub const KNOWN_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Where the agent reads tracefs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Mounted by the host at one of [`KNOWN_PATHS`].
    Host(PathBuf),
    /// Mounted by the agent at the first of [`KNOWN_PATHS`], in its own mount namespace.
    Private(PathBuf),
}

impl Tracefs {
    pub fn path(&self) -> &Path {
        match self {
            Tracefs::Host(p) | Tracefs::Private(p) => p,
        }
    }

    /// One line for `check`, the log and `/api/v1/status`.
    pub fn describe(&self) -> String {
        match self {
            Tracefs::Host(p) => format!("{}", p.display()),
            Tracefs::Private(p) => {
                format!("{} (mounted by the agent in its own mount namespace; the host has none)", p.display())
            }
        }
    }
}

/// What tracefs is available to this process, or why none is and how to fix it. The first call decides (and may
/// mount); later calls return the same answer. Silent: [`log`] says it once the agent has checked its input.
pub fn locate() -> Result<Tracefs, String> {
    static ONCE: OnceLock<Result<Tracefs, String>> = OnceLock::new();
    ONCE.get_or_init(find_or_mount).clone()
}

/// One log line for [`locate`]'s answer.
pub fn log(found: &Result<Tracefs, String>) {
    match found {
        Ok(t @ Tracefs::Private(_)) => tracing::info!("tracefs: {}", t.describe()),
        Ok(t) => tracing::debug!("tracefs: {}", t.describe()),
        Err(why) => tracing::warn!(
            "tracefs unavailable, classic-tracepoint alternatives (tracefs events) will not attach: {why}"
        ),
    }
}

fn find_or_mount() -> Result<Tracefs, String> {
    if let Some(p) = usable() {
        return Ok(Tracefs::Host(p));
    }
    let elsewhere = mount_points(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(), "tracefs");
    if let Some(p) = elsewhere.iter().find(|m| KNOWN_PATHS.contains(&m.as_str())) {
        // Mounted where it is read from, but `events/` is not visible to this process.
        return Err(format!(
            "tracefs is mounted at {p} but this process cannot read it (mode 0700): run as root or with \
             CAP_DAC_READ_SEARCH"
        ));
    }
    match mount_private(Path::new(KNOWN_PATHS[0])) {
        Ok(()) => match usable() {
            Some(p) => Ok(Tracefs::Private(p)),
            None => Err(format!("mounted tracefs at {} but it has no events/ directory", KNOWN_PATHS[0])),
        },
        Err(why) => Err(missing(&elsewhere, &why)),
    }
}

/// The first known path with an `events/` directory (reading `/sys/kernel/debug/tracing` also triggers its
/// automount where debugfs is mounted).
fn usable() -> Option<PathBuf> {
    KNOWN_PATHS.iter().map(PathBuf::from).find(|p| p.join("events").is_dir())
}

/// Why there is no usable tracefs, with the fix.
fn missing(elsewhere: &[String], why_not_mounted: &str) -> String {
    let place = if elsewhere.is_empty() {
        format!("tracefs is not mounted (neither at {} nor at {})", KNOWN_PATHS[0], KNOWN_PATHS[1])
    } else {
        format!(
            "tracefs is mounted at {} but not at {} or {}, the only places tracepoints are attached from",
            elsewhere.join(", "),
            KNOWN_PATHS[0],
            KNOWN_PATHS[1]
        )
    };
    format!(
        "{place}, and the agent could not mount it in its own mount namespace ({why_not_mounted}); fix: \
         `mount -t tracefs tracefs {0}` as root, or on systemd hosts `systemctl start sys-kernel-tracing.mount` \
         (the shipped unit requires it), or give the agent CAP_SYS_ADMIN",
        KNOWN_PATHS[0]
    )
}

/// Mount points of file system type `fstype` in mountinfo text (`proc_pid_mountinfo(5)`), unescaped.
pub fn mount_points(mountinfo: &str, fstype: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            if rest.split(' ').next()? != fstype {
                return None;
            }
            Some(unescape(fields.split(' ').nth(4)?))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal =
            bytes.get(i + 1..i + 4).filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |acc, c| acc.wrapping_mul(8).wrapping_add(c - b'0')));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Enters a new mount namespace whose mounts no longer propagate to the host's (it still receives the host's), and
/// mounts tracefs at `target` there. Needs CAP_SYS_ADMIN.
fn mount_private(target: &Path) -> Result<(), String> {
    let os = |what: &str| format!("{what}: {}", std::io::Error::last_os_error());
    // SAFETY: unshare(2) with a flag only; affects this thread's (and later children's) mount namespace.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(os("unshare(CLONE_NEWNS)"));
    }
    let root = c"/";
    // SAFETY: valid NUL-terminated strings; a propagation change takes no source, type or data.
    if unsafe {
        libc::mount(std::ptr::null(), root.as_ptr(), std::ptr::null(), libc::MS_REC | libc::MS_SLAVE, std::ptr::null())
    } != 0
    {
        return Err(os("making / a slave mount"));
    }
    let target_c = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // SAFETY: valid NUL-terminated strings; tracefs takes no data.
    if unsafe { libc::mount(c"tracefs".as_ptr(), target_c.as_ptr(), c"tracefs".as_ptr(), flags, std::ptr::null()) } != 0
    {
        return Err(os(&format!("mount -t tracefs at {}", target.display())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:12 / /sys/kernel/tracing rw,nosuid,nodev,noexec,relatime shared:12 - tracefs tracefs rw
31 22 0:7 / /sys/kernel/debug rw,nosuid,nodev,noexec,relatime shared:13 - debugfs debugfs rw
40 1 0:12 / /mnt/my\\040trace rw,relatime - tracefs none rw
41 1 0:50 / /weird rw master:3 - ext4 /dev/vda rw
";

    #[test]
    fn finds_every_tracefs_mount_point_unescaped() {
        assert_eq!(mount_points(MOUNTINFO, "tracefs"), ["/sys/kernel/tracing", "/mnt/my trace"]);
        assert_eq!(mount_points(MOUNTINFO, "debugfs"), ["/sys/kernel/debug"]);
        assert!(mount_points(MOUNTINFO, "bpf").is_empty());
        assert!(mount_points("garbage line\n\n - \n", "tracefs").is_empty());
    }

    #[test]
    fn unescapes_octal_and_keeps_other_backslashes() {
        assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
        assert_eq!(unescape(r"/x\09"), r"/x\09");
        assert_eq!(unescape(r"\"), r"\");
    }

    #[test]
    fn the_message_names_the_place_and_the_fix() {
        let none = missing(&[], "unshare(CLONE_NEWNS): Operation not permitted (os error 1)");
        assert!(none.contains("tracefs is not mounted"), "{none}");
        assert!(none.contains("Operation not permitted"), "{none}");
        assert!(none.contains("mount -t tracefs tracefs /sys/kernel/tracing"), "{none}");
        assert!(none.contains("sys-kernel-tracing.mount"), "{none}");
        let elsewhere = missing(&["/mnt/t".into()], "EPERM");
        assert!(elsewhere.contains("mounted at /mnt/t but not at /sys/kernel/tracing"), "{elsewhere}");
    }
}
