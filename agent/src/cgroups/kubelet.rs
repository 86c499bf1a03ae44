//! Names for pod UIDs and container ids, read from what the kubelet leaves on the node's disk:
//!
//! * `/var/log/pods/<namespace>_<pod>_<uid>/` (the kubelet's pod log directory) → namespace and pod name;
//! * `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` (the kubelet's symlinks) → container name;
//! * fallback for pods without logs: `/var/lib/kubelet/pods/<uid>/` — the namespace from a projected service-account
//!   volume's `namespace` file, the pod name from the last line of `etc-hosts` (the pod's hostname).
//!
//! Kubernetes object names never contain `_`, which makes the file names unambiguous. Everything is optional: what
//! cannot be read stays unnamed and the labels fall back to the UID / short container id. All paths are below a
//! configurable host root, for agents that see the node's filesystem under e.g. `/host`.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// Namespace and name of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodName {
    pub namespace: String,
    pub name: String,
}

/// Indexes of the kubelet's directories, rebuilt on a miss.
#[derive(Debug)]
pub struct KubeletNames {
    host_root: PathBuf,
    pods: HashMap<String, PodName>,
    containers: HashMap<String, String>,
}

impl KubeletNames {
    pub fn new(host_root: impl Into<PathBuf>) -> Self {
        Self { host_root: host_root.into(), pods: HashMap::new(), containers: HashMap::new() }
    }

    /// Re-reads the pod and container log directories (cheap: one `readdir` each).
    pub fn refresh(&mut self) {
        self.pods = read_names(&self.host_root.join("var/log/pods"), parse_pod_log_dir).collect();
        self.containers = read_names(&self.host_root.join("var/log/containers"), parse_container_log).collect();
    }

    /// The pod's namespace and name, from the log directory or the kubelet's pod directory.
    pub fn pod(&mut self, uid: &str) -> Option<PodName> {
        if let Some(p) = self.pods.get(uid) {
            return Some(p.clone());
        }
        let from_kubelet = pod_from_kubelet_dir(&self.host_root.join("var/lib/kubelet/pods").join(uid));
        if let Some(p) = &from_kubelet {
            self.pods.insert(uid.to_string(), p.clone());
        }
        from_kubelet
    }

    /// The container's name (from its log symlink).
    pub fn container(&self, id: &str) -> Option<&str> {
        self.containers.get(id).map(String::as_str)
    }

    /// Whether `uid` / `id` are in the current indexes (a miss is worth a [`refresh`](Self::refresh)).
    pub fn knows(&self, uid: &str, id: Option<&str>) -> bool {
        self.pods.contains_key(uid) && id.is_none_or(|id| self.containers.contains_key(id))
    }
}

fn read_names<T>(dir: &Path, parse: fn(&str) -> Option<(String, T)>) -> impl Iterator<Item = (String, T)> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries.filter_map(move |e| parse(&e.file_name().to_string_lossy()))
}

/// `<namespace>_<pod>_<uid>` → (uid, name).
fn parse_pod_log_dir(name: &str) -> Option<(String, PodName)> {
    let mut parts = name.split('_');
    let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || ns.is_empty() || pod.is_empty() || uid.is_empty() {
        return None;
    }
    Some((uid.to_string(), PodName { namespace: ns.to_string(), name: pod.to_string() }))
}

/// `<pod>_<namespace>_<container>-<id>.log` → (id, container).
fn parse_container_log(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    let mut parts = rest.split('_');
    let (_pod, _ns, container) = (parts.next()?, parts.next()?, parts.next()?);
    let id_ok = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (parts.next().is_none() && id_ok && !container.is_empty()).then(|| (id.to_string(), container.to_string()))
}

/// The kubelet's pod directory: namespace from a projected volume's `namespace` file, name from `etc-hosts`.
fn pod_from_kubelet_dir(dir: &Path) -> Option<PodName> {
    let projected = dir.join("volumes/kubernetes.io~projected");
    let namespace = std::fs::read_dir(projected)
        .into_iter()
        .flatten()
        .flatten()
        .find_map(|vol| std::fs::read_to_string(vol.path().join("namespace")).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())?;
    let hosts = std::fs::read_to_string(dir.join("etc-hosts")).ok()?;
    let name = hosts
        .lines()
        .rev()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find(|l| !l.is_empty())?
        .split_whitespace()
        .nth(1)?
        .to_string();
    Some(PodName { namespace, name })
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8";
    const ID: &str = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";

    #[test]
    fn file_name_formats() {
        assert_eq!(
            parse_pod_log_dir(&format!("kube-system_coredns-5d78c9869d-x7k2p_{UID}")),
            Some((UID.into(), PodName { namespace: "kube-system".into(), name: "coredns-5d78c9869d-x7k2p".into() }))
        );
        assert_eq!(parse_pod_log_dir("garbage"), None);
        assert_eq!(parse_pod_log_dir("a_b_c_d"), None);
        assert_eq!(
            parse_container_log(&format!("coredns-5d78c9869d-x7k2p_kube-system_coredns-{ID}.log")),
            Some((ID.into(), "coredns".into()))
        );
        assert_eq!(parse_container_log("x_y_z-123.log"), None);
        assert_eq!(parse_container_log(&format!("x_y_z-{ID}.txt")), None);
    }

    #[test]
    fn reads_a_real_node_layout() {
        let root = std::env::temp_dir().join(format!("mmuscope-kubelet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(format!("var/log/pods/web_nginx-7c5ddbdf54-2xk8q_{UID}/nginx"))).unwrap();
        std::fs::create_dir_all(root.join("var/log/containers")).unwrap();
        std::fs::write(root.join(format!("var/log/containers/nginx-7c5ddbdf54-2xk8q_web_nginx-{ID}.log")), "").unwrap();
        let other = "11111111-2222-3333-4444-555555555555";
        let vol = root.join(format!("var/lib/kubelet/pods/{other}/volumes/kubernetes.io~projected/kube-api-access-x"));
        std::fs::create_dir_all(&vol).unwrap();
        std::fs::write(vol.join("namespace"), "batch\n").unwrap();
        std::fs::write(
            root.join(format!("var/lib/kubelet/pods/{other}/etc-hosts")),
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.244.1.7\tjob-abc-x2\n",
        )
        .unwrap();

        let mut k = KubeletNames::new(&root);
        assert!(!k.knows(UID, Some(ID)));
        k.refresh();
        assert!(k.knows(UID, Some(ID)));
        assert_eq!(k.pod(UID).unwrap().name, "nginx-7c5ddbdf54-2xk8q");
        assert_eq!(k.container(ID), Some("nginx"));
        assert_eq!(k.pod(other), Some(PodName { namespace: "batch".into(), name: "job-abc-x2".into() }));
        assert_eq!(k.pod("00000000-0000-0000-0000-000000000000"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
