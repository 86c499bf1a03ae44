//! A Kubernetes pod as the agent sees one on a node: a kubelet cgroup path (systemd driver, BestEffort) and the
//! kubelet's log directories below a scratch `--kubernetes.host-root`, which name its namespace, pod and container.
//! Workloads run in its cgroup get those labels from the agent.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Result;

pub const NAMESPACE: &str = "gpu-jobs";
pub const POD: &str = "trainer-0";
pub const CONTAINER: &str = "trainer";
const POD_UID: &str = "0c5a1f2e-4b7d-4e1a-9c3b-5d6e7f8a9b0c";
const CONTAINER_ID: &str = "5f2d9c0b7e1a43d8a6b4c2e0f9d8b7a6c5e4d3f2a1b0c9d8e7f6a5b4c3d2e1f0";

pub struct Pod {
    /// For the agent's `--kubernetes.host-root`.
    pub host_root: PathBuf,
    /// The pod's cgroup (`--cgroup-parent` of the workload) and the container's (`--cgroup-name`).
    pub parent: String,
    pub name: String,
}

impl Pod {
    /// Writes the kubelet's files below `dir/host`.
    pub fn create(dir: &Path) -> Result<Self> {
        let host_root = dir.join("host");
        fs::create_dir_all(host_root.join(format!("var/log/pods/{NAMESPACE}_{POD}_{POD_UID}/{CONTAINER}")))?;
        fs::create_dir_all(host_root.join("var/log/containers"))?;
        fs::write(host_root.join(format!("var/log/containers/{POD}_{NAMESPACE}_{CONTAINER}-{CONTAINER_ID}.log")), "")?;
        let parent = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
            POD_UID.replace('-', "_")
        );
        Ok(Self { host_root, parent, name: format!("cri-containerd-{CONTAINER_ID}.scope") })
    }

    /// The container's cgroup path, the agent's `cgroup` label.
    pub fn cgroup(&self) -> String {
        format!("{}/{}", self.parent, self.name)
    }
}
