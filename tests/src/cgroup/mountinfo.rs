//! The cgroup-related parts of `/proc/self/mountinfo` and `/proc/cgroups`.
//!
//! mountinfo (proc(5)): `id parent maj:min root mount_point mount_opts [optional...] - fstype source super_opts`.
//! The optional fields vary in number, so everything after the `-` separator is located by the separator, not by
//! position. Paths escape space, tab, newline and backslash as octal (`\040`).

use std::path::PathBuf;

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

/// Extracts the first cgroup2 mount and the first v1 mount carrying the `memory` controller.
pub fn parse_mountinfo(text: &str) -> Result<CgroupMounts, CgroupError> {
    let mut out = CgroupMounts::default();
    for (lineno, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: &str| CgroupError::Mountinfo { line: lineno + 1, reason: reason.to_owned() };
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-").ok_or_else(|| bad("no `-` separator"))?;
        if sep < 6 || fields.len() < sep + 4 {
            return Err(bad("too few fields"));
        }
        let (fstype, super_opts) = (fields[sep + 1], fields[sep + 3]);
        let slot = match fstype {
            "cgroup2" => &mut out.cgroup2,
            "cgroup" if super_opts.split(',').any(|o| o == "memory") => &mut out.memory_v1,
            _ => continue,
        };
        if slot.is_some() {
            continue; // the same hierarchy bind-mounted again: the first mount is as good as any
        }
        let root = CgroupPath::parse(&unescape(fields[3])).map_err(|e| bad(&e.to_string()))?;
        *slot = Some(CgroupMount { mount_point: PathBuf::from(unescape(fields[4])), root });
    }
    Ok(out)
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

/// Undoes mountinfo's octal escapes (`\040` → space). `\777` is not a byte and stays as written (it overflowed
/// before; the agent's copy of this parser had the same bug, found by its fuzz target).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Three octal digits of at most `\377`; anything else stays as written.
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::try_from(d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))).ok());
        match (b[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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
    fn malformed_line_is_an_error() {
        assert!(parse_mountinfo("garbage without separator\n").is_err());
        assert!(parse_mountinfo("1 2 - cgroup2\n").is_err());
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
