//! The cgroup-related parts of `/proc/self/mountinfo` and `/proc/cgroups`.
//!
//! mountinfo is parsed by the agent's own parser (`mmuscope::cgroups::mounts`), so the tests find the hierarchies
//! exactly as the agent does; this module only turns its result into the fixture's types.

use std::path::PathBuf;

use mmuscope::cgroups::mounts::{Hierarchies as AgentHierarchies, Hierarchy};

use super::{CgroupError, CgroupPath};

/// One cgroup filesystem mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/unified`.
    pub mount_point: PathBuf,
    /// Which directory of the hierarchy is mounted there (`/` unless a sub-tree or a cgroup namespace is involved).
    pub root: CgroupPath,
}

/// The mounts a scenario needs: the default (cgroup2) hierarchy and, on hybrid/legacy hosts, the v1 `memory` one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupMounts {
    pub cgroup2: Option<CgroupMount>,
    pub memory_v1: Option<CgroupMount>,
}

/// The first cgroup2 mount and the first v1 mount carrying the `memory` controller, as the agent finds them. A
/// mounted root that is not a valid cgroup path is an error (the fixture could not name cgroups below it).
pub fn parse_mountinfo(text: &str) -> Result<CgroupMounts, CgroupError> {
    let found = AgentHierarchies::parse(text);
    let mount = |h: Option<Hierarchy>| -> Result<Option<CgroupMount>, CgroupError> {
        h.map(|h| {
            let root = CgroupPath::parse(&h.root)
                .map_err(|e| CgroupError::Mountinfo { mount: h.mount.clone(), reason: e.to_string() })?;
            Ok(CgroupMount { mount_point: h.mount, root })
        })
        .transpose()
    };
    Ok(CgroupMounts { cgroup2: mount(found.default)?, memory_v1: mount(found.memory)? })
}

/// The hierarchy id of the `memory` controller in `/proc/cgroups`: `Some(0)` means it is bound to the default
/// (cgroup2) hierarchy, `None` that the kernel has no (enabled) memory controller.
pub fn memory_hierarchy_id(proc_cgroups: &str) -> Option<u32> {
    proc_cgroups
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"memory"))
        .filter(|f| f.get(3) != Some(&"0")) // `enabled` column (absent in very old kernels)
        .and_then(|f| f.get(1)?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_host() {
        let m = parse_mountinfo(HYBRID).unwrap();
        assert_eq!(m.cgroup2.unwrap().mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        let mem = m.memory_v1.unwrap();
        assert_eq!(mem.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert!(mem.root.is_root());
    }

    #[test]
    fn pure_v2_host_with_optional_fields() {
        let text = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev shared:9 master:1 - cgroup2 cgroup2 rw,nsdelegate\n";
        let m = parse_mountinfo(text).unwrap();
        assert_eq!(m.cgroup2.unwrap().mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m.memory_v1, None);
    }

    #[test]
    fn combined_v1_mount_and_escaped_paths() {
        let text = "50 1 0:40 /sub\\040dir /mnt/my\\040cg rw - cgroup cg rw,cpu,memory\n";
        let mem = parse_mountinfo(text).unwrap().memory_v1.unwrap();
        assert_eq!(mem.mount_point, PathBuf::from("/mnt/my cg"));
        assert_eq!(mem.root.as_str(), "/sub dir");
    }

    #[test]
    fn memory_option_must_match_whole_token() {
        let text = "50 1 0:40 / /mnt/x rw - cgroup cg rw,name=memoryish\n";
        assert_eq!(parse_mountinfo(text).unwrap().memory_v1, None);
    }

    #[test]
    fn a_root_that_is_no_cgroup_path_is_an_error() {
        let text = "50 1 0:40 /a/../b /mnt/x rw - cgroup2 cgroup2 rw\n";
        assert!(matches!(parse_mountinfo(text), Err(CgroupError::Mountinfo { .. })));
    }

    #[test]
    fn proc_cgroups_memory_hierarchy() {
        let hybrid = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpu\t1\t1\t1\nmemory\t4\t45\t1\n";
        assert_eq!(memory_hierarchy_id(hybrid), Some(4));
        let v2 = "#subsys_name\thierarchy\tnum_cgroups\tenabled\nmemory\t0\t80\t1\n";
        assert_eq!(memory_hierarchy_id(v2), Some(0));
        let disabled = "memory\t0\t1\t0\n";
        assert_eq!(memory_hierarchy_id(disabled), None);
        assert_eq!(memory_hierarchy_id("cpu\t1\t1\t1\n"), None);
    }
}
