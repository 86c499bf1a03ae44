//! Finds the cgroup hierarchies from `/proc/self/mountinfo`.

use std::path::PathBuf;

/// A mounted cgroup hierarchy: where it is mounted and which of its directories the mount
/// shows as its root (not `/` inside a cgroup namespace or for a bind mount).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    pub root: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hierarchies {
    /// cgroup v2 (unified).
    pub default: Option<Hierarchy>,
    /// A v1 hierarchy carrying the `memory` controller (hybrid/legacy hosts).
    pub memory: Option<Hierarchy>,
}

impl Hierarchies {
    pub fn discover() -> Self {
        std::fs::read_to_string("/proc/self/mountinfo").map(|s| Self::parse(&s)).unwrap_or_default()
    }

    /// Parses mountinfo: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SRC SUPEROPTS`.
    pub fn parse(mountinfo: &str) -> Self {
        let mut h = Self::default();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            if l.len() < 5 || r.is_empty() {
                continue;
            }
            let hier = Hierarchy { mount: PathBuf::from(unescape(l[4])), root: unescape(l[3]) };
            match r[0] {
                "cgroup2" if h.default.is_none() => h.default = Some(hier),
                "cgroup" if h.memory.is_none() && r.get(2).is_some_and(|o| o.split(',').any(|o| o == "memory")) => {
                    h.memory = Some(hier)
                }
                _ => {}
            }
        }
        h
    }

    /// Short description for logs and `check`.
    pub fn describe(&self) -> String {
        let show = |h: &Option<Hierarchy>| h.as_ref().map_or("none".to_string(), |h| h.mount.display().to_string());
        format!(
            "memory controller: {}, default hierarchy: {}",
            show(&self.memory.clone().or(self.default.clone())),
            show(&self.default)
        )
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`. A sequence above `\377` is not a byte and stays
/// as written.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)))
            .then(|| b[i + 1..i + 4].iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(v) = octal {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_above_a_byte_stay_as_written() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("\\377"), String::from_utf8_lossy(&[0xff]));
        // Found by the cgroup_path fuzz target: `\777` overflowed the byte arithmetic.
        assert_eq!(unescape("x\\777y"), "x\\777y");
        assert_eq!(unescape("\\40"), "\\40");
    }

    const HYBRID: &str = "\
30 23 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:15 - cgroup cgroup rw,cpu,cpuacct
38 30 0:34 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_host_uses_v1_memory() {
        let h = Hierarchies::parse(HYBRID);
        assert_eq!(h.memory.unwrap().mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(h.default.unwrap().mount, PathBuf::from("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn pure_v2_in_a_cgroup_namespace() {
        let h = Hierarchies::parse(
            "1140 1130 0:27 /kubepods.slice/pod\\040x /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n",
        );
        assert_eq!(h.memory, None);
        let d = h.default.unwrap();
        assert_eq!(d.root, "/kubepods.slice/pod x");
        assert_eq!(d.mount, PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn garbage_is_ignored() {
        assert_eq!(Hierarchies::parse("nonsense\n - \n1 2 3\n"), Hierarchies::default());
    }
}
