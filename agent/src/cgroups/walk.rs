//! Walking a mounted cgroup hierarchy: every cgroup directory with its inode (= cgroup id) and label path.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Visits every cgroup directory below `dir` with its inode and label path (`root` joined with the part below
/// `mount`).
pub fn walk(mount: &Path, dir: &Path, root: &str, visit: &mut dyn FnMut(u64, String)) {
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
    use std::collections::HashMap;

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
