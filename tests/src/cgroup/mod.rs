//! Cgroup fixture: find the hierarchies, create a fresh cgroup in each, move a process in, remove it afterwards.
//!
//! The agent attributes invalidations to the **memory controller's** cgroup. On hybrid hosts (this project's dev/CI
//! machines) that is the v1 `memory` hierarchy, not the cgroup2 one, so a scenario enters the same relative path in
//! both and records which one the agent is expected to use ([`HierarchyKind`] in [`CgroupPlacement::attribution`]).

mod error;
mod fixture;
mod mountinfo;
mod path;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use error::CgroupError;
pub use fixture::{create, create_and_enter, create_and_enter_thread, current, remove};
pub use mountinfo::{CgroupMount, CgroupMounts, memory_hierarchy_id, parse_mountinfo};
pub use path::CgroupPath;

/// A cgroup hierarchy the fixture knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HierarchyKind {
    /// The cgroup2 ("unified") hierarchy.
    Default,
    /// The cgroup v1 hierarchy that carries the `memory` controller.
    MemoryV1,
}

/// One cgroup as the kernel and the agent see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupRef {
    /// Path below the hierarchy's root, e.g. `/mmuscope-test/kvm-madvise-1234` (the agent's `cgroup` label).
    pub path: CgroupPath,
    /// The cgroup id: the directory's inode number, which is the kernfs node id the kernel uses as cgroup id.
    pub id: u64,
    /// The directory on this host, e.g. `/sys/fs/cgroup/memory/mmuscope-test/kvm-madvise-1234`.
    pub dir: PathBuf,
}

/// Where a process was put: one cgroup per hierarchy plus the hierarchy the agent attributes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupPlacement {
    pub default: CgroupRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_v1: Option<CgroupRef>,
    /// The hierarchy owning the memory controller: `memory_v1` when a v1 memory hierarchy is mounted and
    /// `/proc/cgroups` binds memory to a non-zero hierarchy id, else `default`.
    pub attribution: HierarchyKind,
}

impl CgroupPlacement {
    /// The cgroup the agent must attribute this process's invalidations to.
    pub fn attributed(&self) -> &CgroupRef {
        match (self.attribution, &self.memory_v1) {
            (HierarchyKind::MemoryV1, Some(m)) => m,
            _ => &self.default,
        }
    }
}

/// The mounted hierarchies of this host and which one owns the memory controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    pub default: CgroupMount,
    pub memory_v1: Option<CgroupMount>,
    pub attribution: HierarchyKind,
}

impl Hierarchies {
    /// Reads `/proc/self/mountinfo` and `/proc/cgroups`.
    pub fn discover() -> Result<Self, CgroupError> {
        let read = |p: &str| {
            std::fs::read_to_string(p).map_err(|source| CgroupError::Io { op: "read", path: p.into(), source })
        };
        Self::from_proc(&read("/proc/self/mountinfo")?, &read("/proc/cgroups")?)
    }

    /// The decision itself, from the two files' contents.
    pub fn from_proc(mountinfo: &str, proc_cgroups: &str) -> Result<Self, CgroupError> {
        let mounts = parse_mountinfo(mountinfo)?;
        let default = mounts.cgroup2.ok_or(CgroupError::NoCgroup2Mount)?;
        let v1_owns_memory = matches!(memory_hierarchy_id(proc_cgroups), Some(id) if id != 0);
        let attribution = match (&mounts.memory_v1, v1_owns_memory) {
            (Some(_), true) => HierarchyKind::MemoryV1,
            _ => HierarchyKind::Default,
        };
        // A v1 memory mount the kernel does not bind memory to (stale/odd setups) is not entered.
        let memory_v1 = mounts.memory_v1.filter(|_| v1_owns_memory);
        Ok(Self { default, memory_v1, attribution })
    }

    /// Every hierarchy to create the cgroup in, default first.
    pub fn iter(&self) -> impl Iterator<Item = (HierarchyKind, &CgroupMount)> {
        std::iter::once((HierarchyKind::Default, &self.default))
            .chain(self.memory_v1.iter().map(|m| (HierarchyKind::MemoryV1, m)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = "35 24 0:30 / /sys/fs/cgroup rw shared:9 - cgroup2 cgroup2 rw\n";
    const HYBRID: &str = "\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_attributes_to_memory_v1() {
        let h = Hierarchies::from_proc(HYBRID, "memory\t4\t45\t1\n").unwrap();
        assert_eq!(h.attribution, HierarchyKind::MemoryV1);
        let kinds: Vec<_> = h.iter().map(|(k, _)| k).collect();
        assert_eq!(kinds, [HierarchyKind::Default, HierarchyKind::MemoryV1]);
    }

    #[test]
    fn pure_v2_attributes_to_default() {
        let h = Hierarchies::from_proc(V2, "memory\t0\t80\t1\n").unwrap();
        assert_eq!(h.attribution, HierarchyKind::Default);
        assert_eq!(h.memory_v1, None);
    }

    #[test]
    fn v1_mount_without_v1_binding_is_ignored() {
        let h = Hierarchies::from_proc(HYBRID, "memory\t0\t45\t1\n").unwrap();
        assert_eq!(h.attribution, HierarchyKind::Default);
        assert_eq!(h.memory_v1, None);
    }

    #[test]
    fn missing_cgroup2_is_an_error() {
        let v1_only = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert!(matches!(Hierarchies::from_proc(v1_only, "memory\t4\t1\t1\n"), Err(CgroupError::NoCgroup2Mount)));
    }

    #[test]
    fn attributed_picks_the_memory_owner() {
        let r = |p: &str, id| CgroupRef { path: CgroupPath::parse(p).unwrap(), id, dir: PathBuf::from("/x") };
        let mut placement = CgroupPlacement {
            default: r("/a", 10),
            memory_v1: Some(r("/a", 20)),
            attribution: HierarchyKind::MemoryV1,
        };
        assert_eq!(placement.attributed().id, 20);
        placement.attribution = HierarchyKind::Default;
        assert_eq!(placement.attributed().id, 10);
    }
}
