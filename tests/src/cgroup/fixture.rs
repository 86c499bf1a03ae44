//! Creating, entering and removing a cgroup in every relevant hierarchy.
//!
//! Nothing here deletes on drop: the workload must leave its cgroups behind (the harness scrapes the agent after the
//! workload exited, then calls [`remove`]).

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{CgroupError, CgroupPath, CgroupPlacement, CgroupRef, Hierarchies, HierarchyKind};

/// Creates `rel` (and missing ancestors) in every hierarchy of `h`, moves the calling process into each, checks
/// `/proc/self/cgroup` agrees, and returns the placement. Fails if the leaf already exists: a scenario's cgroup must
/// be fresh so that nothing else was ever counted there.
pub fn create_and_enter(h: &Hierarchies, rel: &CgroupPath) -> Result<CgroupPlacement, CgroupError> {
    let placement = make(h, rel, Some(std::process::id()))?;
    verify_membership(&placement)?;
    Ok(placement)
}

/// Creates `rel` as [`create_and_enter`] does, without moving anything into it: a cgroup that exists before the
/// process that will run in it (which enters it by writing `0` to each `cgroup.procs` of the placement).
pub fn create(h: &Hierarchies, rel: &CgroupPath) -> Result<CgroupPlacement, CgroupError> {
    make(h, rel, None)
}

fn make(h: &Hierarchies, rel: &CgroupPath, enter: Option<u32>) -> Result<CgroupPlacement, CgroupError> {
    if rel.is_root() {
        return Err(CgroupError::InvalidPath {
            path: rel.to_string(),
            reason: "a scenario cannot run in the hierarchy root".to_owned(),
        });
    }
    let mut default = None;
    let mut memory_v1 = None;
    for (kind, mount) in h.iter() {
        // On pure cgroup2 hosts the memory controller must be enabled down to the leaf, or the leaf would share its
        // nearest enabled ancestor's memcg and the agent would attribute there.
        let delegate_memory = kind == HierarchyKind::Default && h.attribution == HierarchyKind::Default;
        let dir = rel.under(&mount.mount_point);
        for ancestor in rel.ancestors() {
            mkdir(&ancestor.under(&mount.mount_point), true)?;
        }
        if delegate_memory {
            enable_memory_down_to(&mount.mount_point, rel)?;
        }
        mkdir(&dir, false)?;
        if let Some(pid) = enter {
            write_file(&dir.join("cgroup.procs"), &format!("{pid}\n"))?;
        }
        let id = fs::metadata(&dir).map_err(|e| CgroupError::io("stat", &dir, e))?.ino();
        let cg = CgroupRef { path: rel.below(&mount.root), id, dir };
        match kind {
            HierarchyKind::Default => default = Some(cg),
            HierarchyKind::MemoryV1 => memory_v1 = Some(cg),
        }
    }
    let placement = CgroupPlacement {
        default: default.expect("Hierarchies::iter always yields the default hierarchy"),
        memory_v1,
        attribution: h.attribution,
    };
    Ok(placement)
}

/// Creates `rel` in the v1 memory hierarchy only and moves the calling **thread** into it (its `tasks` file), leaving
/// the rest of the process where it is. This is how a thread charges another memory cgroup than its mm's owner, which
/// only cgroup v1 allows: cgroup2's memory controller is not threaded, so on a host where cgroup2 owns memory this
/// fails with a reason. Checked through `/proc/thread-self/cgroup`. Fails if the leaf exists already.
pub fn create_and_enter_thread(h: &Hierarchies, rel: &CgroupPath) -> Result<CgroupRef, CgroupError> {
    let Some(mount) = h.memory_v1.as_ref().filter(|_| h.attribution == HierarchyKind::MemoryV1) else {
        return Err(CgroupError::InvalidPath {
            path: rel.to_string(),
            reason: "a thread can sit in another memory cgroup than its process only with the v1 memory controller; \
                     on this host cgroup2 owns memory"
                .to_owned(),
        });
    };
    for ancestor in rel.ancestors() {
        mkdir(&ancestor.under(&mount.mount_point), true)?;
    }
    let dir = rel.under(&mount.mount_point);
    mkdir(&dir, false)?;
    // SAFETY: gettid has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    write_file(&dir.join("tasks"), &format!("{tid}\n"))?;
    let id = fs::metadata(&dir).map_err(|e| CgroupError::io("stat", &dir, e))?.ino();
    let cg = CgroupRef { path: rel.below(&mount.root), id, dir };
    let text = fs::read_to_string("/proc/thread-self/cgroup")
        .map_err(|e| CgroupError::io("read", "/proc/thread-self/cgroup", e))?;
    let actual = proc_self_cgroup(&text, HierarchyKind::MemoryV1).unwrap_or_default();
    if actual != cg.path.as_str() {
        return Err(CgroupError::NotEntered { hierarchy: "memory_v1 (thread)", expected: cg.path.to_string(), actual });
    }
    Ok(cg)
}

/// Where the calling process already is, in every hierarchy of `h`: the cgroup it was started in, e.g. the one
/// systemd made for `systemd-run --scope` or a service. Nothing is created or moved. Refuses a process in a
/// hierarchy's root: its invalidations would be attributed to the root, not to anything of its own.
pub fn current(h: &Hierarchies) -> Result<CgroupPlacement, CgroupError> {
    let text = fs::read_to_string("/proc/self/cgroup").map_err(|e| CgroupError::io("read", "/proc/self/cgroup", e))?;
    let mut default = None;
    let mut memory_v1 = None;
    for (kind, mount) in h.iter() {
        let found = proc_self_cgroup(&text, kind).ok_or_else(|| CgroupError::InvalidPath {
            path: "/proc/self/cgroup".to_owned(),
            reason: format!("no line for the {kind:?} hierarchy"),
        })?;
        let path = CgroupPath::parse(&found)?;
        // /proc/self/cgroup is relative to the cgroup namespace, the mount may show a sub-tree of it.
        let rel = match path.as_str().strip_prefix(mount.root.as_str()) {
            Some(rest) if !mount.root.is_root() => CgroupPath::parse(if rest.is_empty() { "/" } else { rest })?,
            _ => path.clone(),
        };
        if path.is_root() {
            return Err(CgroupError::InvalidPath {
                path: path.to_string(),
                reason: "this process is in the hierarchy root; start it in a cgroup of its own".to_owned(),
            });
        }
        let dir = rel.under(&mount.mount_point);
        let id = fs::metadata(&dir).map_err(|e| CgroupError::io("stat", &dir, e))?.ino();
        let cg = CgroupRef { path: rel.below(&mount.root), id, dir };
        match kind {
            HierarchyKind::Default => default = Some(cg),
            HierarchyKind::MemoryV1 => memory_v1 = Some(cg),
        }
    }
    Ok(CgroupPlacement {
        default: default.expect("Hierarchies::iter always yields the default hierarchy"),
        memory_v1,
        attribution: h.attribution,
    })
}

/// The path of `kind`'s line in a `/proc/self/cgroup` text (`0::/a/b` for cgroup2, `N:…memory…:/a/b` for v1).
fn proc_self_cgroup(text: &str, kind: HierarchyKind) -> Option<String> {
    text.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        let wanted = match kind {
            HierarchyKind::Default => id == "0" && ctrls.is_empty(),
            HierarchyKind::MemoryV1 => ctrls.split(',').any(|c| c == "memory"),
        };
        wanted.then(|| path.to_owned())
    })
}

/// Removes `rel` from every hierarchy (already absent is fine), then, with `prune_parents`, its ancestors that are
/// now empty. An ancestor still in use (other runs' cgroups) stops the pruning quietly.
pub fn remove(h: &Hierarchies, rel: &CgroupPath, prune_parents: bool) -> Result<(), CgroupError> {
    if rel.is_root() {
        return Err(CgroupError::InvalidPath {
            path: rel.to_string(),
            reason: "refusing to remove the hierarchy root".to_owned(),
        });
    }
    let mut first_err = None;
    for (_, mount) in h.iter() {
        let dir = rel.under(&mount.mount_point);
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                first_err.get_or_insert(CgroupError::Busy(dir));
                continue;
            }
            Err(e) => {
                first_err.get_or_insert(CgroupError::io("rmdir", &dir, e));
                continue;
            }
        }
        if prune_parents {
            for ancestor in rel.ancestors().iter().rev() {
                if fs::remove_dir(ancestor.under(&mount.mount_point)).is_err() {
                    break; // busy (siblings) or gone: either way not ours to remove
                }
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

fn mkdir(dir: &Path, exist_ok: bool) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists && exist_ok => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(CgroupError::AlreadyExists(dir.to_path_buf())),
        Err(e) => Err(CgroupError::io("mkdir", dir, e)),
    }
}

fn write_file(path: &Path, content: &str) -> Result<(), CgroupError> {
    fs::write(path, content).map_err(|e| CgroupError::io("write", path, e))
}

/// Writes `+memory` into `cgroup.subtree_control` of the root and of every ancestor of `rel` where it is missing.
fn enable_memory_down_to(mount_point: &Path, rel: &CgroupPath) -> Result<(), CgroupError> {
    let parents = std::iter::once(CgroupPath::root()).chain(rel.ancestors());
    for p in parents {
        let control = p.under(mount_point).join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).map_err(|e| CgroupError::io("read", &control, e))?;
        if !enabled.split_whitespace().any(|c| c == "memory") {
            write_file(&control, "+memory")?;
        }
    }
    Ok(())
}

/// Confirms through `/proc/self/cgroup` that the kernel now has this process where the placement says.
fn verify_membership(p: &CgroupPlacement) -> Result<(), CgroupError> {
    let text = fs::read_to_string("/proc/self/cgroup").map_err(|e| CgroupError::io("read", "/proc/self/cgroup", e))?;
    let find = |pred: &dyn Fn(&str, &str) -> bool| -> String {
        text.lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ':');
                Some((f.next()?, f.next()?, f.next()?))
            })
            .find(|(id, ctrls, _)| pred(id, ctrls))
            .map(|(_, _, path)| path.to_owned())
            .unwrap_or_default()
    };
    let check = |hierarchy, expected: &CgroupRef, actual: String| {
        if actual == expected.path.as_str() {
            Ok(())
        } else {
            Err(CgroupError::NotEntered { hierarchy, expected: expected.path.to_string(), actual })
        }
    };
    check("default", &p.default, find(&|id, ctrls| id == "0" && ctrls.is_empty()))?;
    if let Some(m) = &p.memory_v1 {
        check("memory_v1", m, find(&|_, ctrls| ctrls.split(',').any(|c| c == "memory")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_cgroup_lines_by_hierarchy() {
        let v2 = "0::/system.slice/fleet-kvm.scope\n";
        assert_eq!(proc_self_cgroup(v2, HierarchyKind::Default).as_deref(), Some("/system.slice/fleet-kvm.scope"));
        assert_eq!(proc_self_cgroup(v2, HierarchyKind::MemoryV1), None);
        let hybrid = "12:cpu,cpuacct:/\n4:memory:/process_api/7\n0::/\n";
        assert_eq!(proc_self_cgroup(hybrid, HierarchyKind::MemoryV1).as_deref(), Some("/process_api/7"));
        assert_eq!(proc_self_cgroup(hybrid, HierarchyKind::Default).as_deref(), Some("/"));
    }
}
