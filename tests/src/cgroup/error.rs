//! Errors of the cgroup fixture, worded for the person running the workload.
//!
//! I/O causes are exposed as `source()`, not repeated in the message: print with the chain (`{:#}` through anyhow).

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error("/proc/self/mountinfo: the cgroup mount at {mount:?} shows an unusable root: {reason}")]
    Mountinfo { mount: PathBuf, reason: String },
    #[error("no cgroup2 (default hierarchy) mount in /proc/self/mountinfo")]
    NoCgroup2Mount,
    #[error("not root: cannot create cgroups ({op} {path})")]
    NotRoot { op: &'static str, path: PathBuf, source: io::Error },
    #[error("cgroup {0} already exists (pick another --cgroup-name, or remove it)")]
    AlreadyExists(PathBuf),
    #[error("cgroup {0} still has processes or child cgroups")]
    Busy(PathBuf),
    #[error("{hierarchy}: /proc/self/cgroup says {actual:?} after joining {expected:?}")]
    NotEntered { hierarchy: &'static str, expected: String, actual: String },
    #[error("{op} {path}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
}

impl CgroupError {
    /// The message with every cause appended (`a: b: c`), for places without anyhow.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(self);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }

    /// Classifies a failed filesystem operation: permission problems of a non-root user become [`Self::NotRoot`].
    pub(crate) fn io(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        let path = path.as_ref().to_path_buf();
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if !root && source.kind() == io::ErrorKind::PermissionDenied {
            Self::NotRoot { op, path, source }
        } else {
            Self::Io { op, path, source }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_appends_the_io_cause_once() {
        let e = CgroupError::Io {
            op: "mkdir",
            path: "/sys/fs/cgroup/x".into(),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        let text = e.chain();
        assert!(text.starts_with("mkdir /sys/fs/cgroup/x: "), "{text}");
        assert_eq!(text.matches("os error 28").count(), 1, "{text}");
    }
}
