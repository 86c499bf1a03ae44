//! Cgroup id → path: the `cgroup` label is the path below the hierarchy's root, as the
//! kernel's cgroup namespace of the mount sees it (`/system.slice/libvirtd.service`).
//!
//! Ids are kernfs node ids = directory inode numbers, unique per hierarchy. Attribution uses
//! the memory controller's hierarchy (v1 `memory` on hybrid hosts, else the unified one) and
//! falls back to the default hierarchy when a task had no memory css. Unknown ids trigger one
//! re-walk of the hierarchy per scrape; resolved names are kept so that a cgroup deleted after
//! its first scrape keeps its label.

mod mounts;

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

pub use mounts::{Hierarchies, Hierarchy};

/// Which hierarchy an id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Which {
    Memory,
    Default,
}

/// Label for ids that cannot be resolved (no mm owner, or a cgroup gone before we saw it).
pub const UNKNOWN: &str = "unknown";

pub struct CgroupNames {
    hierarchies: Hierarchies,
    names: HashMap<(Which, u64), String>,
}

impl CgroupNames {
    pub fn new(hierarchies: Hierarchies) -> Self {
        Self { hierarchies, names: HashMap::new() }
    }

    /// Resolves a batch of ids, walking each hierarchy at most once for all misses.
    pub fn resolve_all(&mut self, ids: impl IntoIterator<Item = (Which, u64)>) {
        let mut walked: Vec<Which> = Vec::new();
        for (which, id) in ids {
            if id == 0 || self.names.contains_key(&(which, id)) || walked.contains(&which) {
                continue;
            }
            walked.push(which);
            if let Some(h) = self.hierarchy(which) {
                let (mount, root) = (h.mount.clone(), h.root.clone());
                walk(&mount, &mount, &root, &mut |ino, path| {
                    self.names.insert((which, ino), path);
                });
            }
        }
    }

    /// The label for an id (call [`resolve_all`](Self::resolve_all) first).
    pub fn name(&self, which: Which, id: u64) -> &str {
        self.names.get(&(which, id)).map_or(UNKNOWN, String::as_str)
    }

    fn hierarchy(&self, which: Which) -> Option<&Hierarchy> {
        match which {
            Which::Memory => self.hierarchies.memory.as_ref().or(self.hierarchies.default.as_ref()),
            Which::Default => self.hierarchies.default.as_ref(),
        }
    }
}

/// Visits every cgroup directory below `dir` with its inode and label path.
fn walk(mount: &Path, dir: &Path, root: &str, visit: &mut dyn FnMut(u64, String)) {
    let Ok(meta) = std::fs::metadata(dir) else { return };
    visit(meta.ino(), label_path(root, dir.strip_prefix(mount).unwrap_or(Path::new(""))));
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        // Cgroup directories are real directories; never follow symlinks out of the mount.
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(mount, &entry.path(), root, visit);
        }
    }
}

/// `root` (the mount's root within the hierarchy, from mountinfo) joined with `rel`.
pub fn label_path(root: &str, rel: &Path) -> String {
    let mut p = PathBuf::from(if root.is_empty() { "/" } else { root });
    p.push(rel);
    let s = p.to_string_lossy().into_owned();
    if s.len() > 1 { s.trim_end_matches('/').to_string() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_paths() {
        assert_eq!(label_path("/", Path::new("")), "/");
        assert_eq!(label_path("/", Path::new("system.slice/a.service")), "/system.slice/a.service");
        assert_eq!(label_path("/kubepods", Path::new("pod1")), "/kubepods/pod1");
        assert_eq!(label_path("", Path::new("x")), "/x");
    }

    #[test]
    fn walks_a_real_directory_tree() {
        let base = std::env::temp_dir().join(format!("mmuscope-walk-{}", std::process::id()));
        std::fs::create_dir_all(base.join("a/b")).unwrap();
        std::fs::create_dir_all(base.join("c")).unwrap();
        let mut seen = HashMap::new();
        walk(&base, &base, "/", &mut |ino, p| {
            seen.insert(p, ino);
        });
        let ino_b = std::fs::metadata(base.join("a/b")).unwrap().ino();
        assert_eq!(seen.get("/a/b"), Some(&ino_b));
        assert_eq!(seen.len(), 4, "{seen:?}");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
