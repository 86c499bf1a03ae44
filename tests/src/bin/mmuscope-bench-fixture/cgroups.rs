//! Many cgroups with activity, without as many VMs: empty directories in the default (cgroup2) hierarchy, each given
//! a count in the agent's `KVM_UNMAP_COUNTS` map (as the `eco` tier's 10k-cgroups test does, `mmuscope_tests::eco`),
//! so every scrape resolves, labels and exports them.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use mmuscope_tests::cgroup::parse_mountinfo;
use mmuscope_tests::eco::inject;

/// The count each cgroup gets.
const COUNT: u64 = 3;

/// The cgroups made, removed on drop (children first).
pub struct Created {
    base: PathBuf,
    dirs: Vec<PathBuf>,
}

impl Created {
    pub fn new(n: usize) -> Result<Self> {
        let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo")?)?;
        let v2 = mounts.cgroup2.context("no cgroup2 mount")?;
        let base = v2.mount_point.join(format!("mmuscope-bench-{}", std::process::id()));
        std::fs::create_dir_all(&base).with_context(|| format!("mkdir {}", base.display()))?;
        let mut made = Self { base, dirs: Vec::with_capacity(n) };
        for i in 0..n {
            let d = made.base.join(format!("c{i:05}"));
            std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            made.dirs.push(d);
        }
        Ok(made)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

pub fn inject(agent_pid: u32, made: &Created) -> Result<()> {
    let mut keys = Vec::with_capacity(made.dirs.len());
    for d in &made.dirs {
        keys.push((mmuscope_abi::key_flags::DEFAULT_HIERARCHY, std::fs::metadata(d)?.ino()));
    }
    let mut map = inject::kvm_unmap_counts(agent_pid)?;
    inject::set_counts(&mut map, &keys, COUNT)
}
