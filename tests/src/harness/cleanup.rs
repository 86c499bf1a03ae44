//! Removing a workload's cgroups when a test case ends, passed or failed.

use crate::cgroup::{self, CgroupPath, Hierarchies};

/// Removes `path` from every hierarchy (and now-empty parents) on drop, also while unwinding from a failed assert.
/// Create it *before* starting the workload: the path is chosen by the harness, so even a workload that dies half-way
/// leaves nothing behind.
pub struct CgroupGuard {
    hierarchies: Hierarchies,
    path: CgroupPath,
}

impl CgroupGuard {
    pub fn new(hierarchies: Hierarchies, path: CgroupPath) -> Self {
        Self { hierarchies, path }
    }

    pub fn path(&self) -> &CgroupPath {
        &self.path
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Err(e) = cgroup::remove(&self.hierarchies, &self.path, true) {
            eprintln!("warning: could not remove cgroup {}: {}", self.path, e.chain());
        }
    }
}
