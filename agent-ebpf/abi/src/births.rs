//! Cgroup names at creation: the `cgroup:cgroup_mkdir` tracepoint hands its path to user space through a ring
//! buffer, so that a cgroup removed before the next scrape (a short `systemd-run --scope`, a job's service) is still
//! named in the metrics instead of `unknown`.

/// Bytes of a path, with its NUL; the kernel formats the tracepoint's path into a buffer of this size
/// (`TRACE_CGROUP_PATH_LEN` in kernel/cgroup/cgroup-internal.h).
pub const CGROUP_PATH_BYTES: usize = 1024;

/// One created cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CgroupBirth {
    /// Bytes of `path` before its NUL.
    pub len: u32,
    pub _pad: u32,
    /// The path below the root of its hierarchy, as `cgroup_path()` writes it (`/system.slice/x.scope`).
    pub path: [u8; CGROUP_PATH_BYTES],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for CgroupBirth {}
