//! Validated cgroup paths: the part below a hierarchy's mount point, always starting with `/`.
//!
//! The workload builds paths from user input (`--cgroup-parent`, `--cgroup-name`) and the harness removes
//! directories by path, so anything that could escape the hierarchy (`..`) or name a control file is refused here,
//! once, instead of at every use.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::CgroupError;

/// A normalised cgroup path such as `/mmuscope-test/kvm-madvise-42`; `/` is the hierarchy root.
/// Serialised as that string; deserialising validates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CgroupPath(String);

impl CgroupPath {
    /// The hierarchy root.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Parses `a/b`, `/a/b` or `/a//b/` into `/a/b`. Rejects `.`/`..`, empty input and bad components.
    pub fn parse(s: &str) -> Result<Self, CgroupError> {
        if s.is_empty() {
            return Err(CgroupError::InvalidPath { path: s.to_owned(), reason: "empty".to_owned() });
        }
        let mut path = Self::root();
        for component in s.split('/').filter(|c| !c.is_empty()) {
            path = path.join(component).map_err(|e| match e {
                CgroupError::InvalidName { reason, .. } => CgroupError::InvalidPath { path: s.to_owned(), reason },
                other => other,
            })?;
        }
        Ok(path)
    }

    /// Appends one directory name. The name must be a single, ordinary path component.
    pub fn join(&self, name: &str) -> Result<Self, CgroupError> {
        validate_name(name)?;
        let mut s = self.0.clone();
        if !self.is_root() {
            s.push('/');
        }
        s.push_str(name);
        Ok(Self(s))
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The parent path, `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(if cut == 0 { Self::root() } else { Self(self.0[..cut].to_owned()) })
    }

    /// Proper ancestors from the outermost below the root down to the parent: `/a/b/c` → `/a`, `/a/b`.
    pub fn ancestors(&self) -> Vec<Self> {
        let mut out = Vec::new();
        let mut cur = self.parent();
        while let Some(p) = cur {
            if p.is_root() {
                break;
            }
            cur = p.parent();
            out.push(p);
        }
        out.reverse();
        out
    }

    /// This path under a hierarchy's mount point (`/sys/fs/cgroup/memory` + `/a/b`).
    pub fn under(&self, mount_point: &Path) -> PathBuf {
        let rel = self.0.trim_start_matches('/');
        if rel.is_empty() { mount_point.to_path_buf() } else { mount_point.join(rel) }
    }

    /// Prefixes a mount's own root inside the hierarchy (mountinfo field 4, `/` unless a sub-tree is mounted).
    pub fn below(&self, mount_root: &Self) -> Self {
        if mount_root.is_root() {
            return self.clone();
        }
        if self.is_root() {
            return mount_root.clone();
        }
        Self(format!("{}{}", mount_root.0, self.0))
    }
}

impl TryFrom<String> for CgroupPath {
    type Error = CgroupError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<CgroupPath> for String {
    fn from(p: CgroupPath) -> Self {
        p.0
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cgroup directory name: non-empty, not `.`/`..`, no `/`, NUL or newline (cgroupfs refuses `\n`), and not a
/// core control file's prefix (`cgroup.`), so a path can never point at `cgroup.procs` and friends.
fn validate_name(name: &str) -> Result<(), CgroupError> {
    let reason = if name.is_empty() {
        Some("empty name")
    } else if name == "." || name == ".." {
        Some("`.` and `..` are not allowed")
    } else if name.contains('/') {
        Some("a name may not contain `/`")
    } else if name.contains(['\0', '\n']) {
        Some("a name may not contain NUL or newline")
    } else if name.starts_with("cgroup.") {
        Some("`cgroup.` names are control files")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(r) => Err(CgroupError::InvalidName { name: name.to_owned(), reason: r.to_owned() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_normalises() {
        assert_eq!(CgroupPath::parse("a/b").unwrap().as_str(), "/a/b");
        assert_eq!(CgroupPath::parse("/a//b/").unwrap().as_str(), "/a/b");
        assert_eq!(CgroupPath::parse("/").unwrap(), CgroupPath::root());
        assert_eq!(CgroupPath::parse("system.slice/x.service").unwrap().as_str(), "/system.slice/x.service");
    }

    #[test]
    fn parse_rejects_escapes_and_empty() {
        for bad in ["", "/a/../b", "..", "/a/./b", "/cgroup.procs", "/a\0b"] {
            assert!(CgroupPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn join_validates_single_component() {
        let p = CgroupPath::parse("/mmuscope-test").unwrap();
        assert_eq!(p.join("kvm-madvise-7").unwrap().as_str(), "/mmuscope-test/kvm-madvise-7");
        assert_eq!(CgroupPath::root().join("x").unwrap().as_str(), "/x");
        assert!(p.join("a/b").is_err());
        assert!(p.join("").is_err());
        assert!(p.join("..").is_err());
    }

    #[test]
    fn parent_and_ancestors() {
        let p = CgroupPath::parse("/a/b/c").unwrap();
        assert_eq!(p.parent().unwrap().as_str(), "/a/b");
        assert_eq!(CgroupPath::parse("/a").unwrap().parent().unwrap(), CgroupPath::root());
        assert_eq!(CgroupPath::root().parent(), None);
        let anc: Vec<_> = p.ancestors().iter().map(|a| a.as_str().to_owned()).collect();
        assert_eq!(anc, ["/a", "/a/b"]);
        assert!(CgroupPath::parse("/a").unwrap().ancestors().is_empty());
    }

    #[test]
    fn under_mount_point_and_below_mount_root() {
        let p = CgroupPath::parse("/t/x").unwrap();
        assert_eq!(p.under(Path::new("/sys/fs/cgroup/memory")), Path::new("/sys/fs/cgroup/memory/t/x"));
        assert_eq!(CgroupPath::root().under(Path::new("/sys/fs/cgroup")), Path::new("/sys/fs/cgroup"));
        let root = CgroupPath::parse("/kubepods/pod1").unwrap();
        assert_eq!(p.below(&root).as_str(), "/kubepods/pod1/t/x");
        assert_eq!(p.below(&CgroupPath::root()), p);
        assert_eq!(CgroupPath::root().below(&root), root);
    }
}
