//! The Kubernetes identity of a cgroup: its pod and container parsed from the path ([`super::kubernetes`]), named
//! from the kubelet's files ([`super::kubelet`]) where they are readable.

use super::{
    kubelet::KubeletNames,
    kubernetes::{self, Qos},
};

/// Kubernetes identity of a cgroup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    /// Pod name, or the pod UID while the name is not readable.
    pub pod: String,
    /// Container name, the short container id while the name is not readable, empty for pod-level cgroups.
    pub container: String,
    pub pod_uid: String,
    pub container_id: Option<String>,
    pub qos: Qos,
    pub runtime: &'static str,
    /// Names came from the kubelet's files (not UID / id fallbacks).
    pub named: bool,
}

/// The Kubernetes identity of a path, with names when the kubelet's files have them (refreshing its index at most
/// once per call site batch).
pub(super) fn identity(path: &str, kubelet: &mut KubeletNames, refreshed: &mut bool) -> Option<PodIdentity> {
    let pod = kubernetes::parse(path)?;
    if !*refreshed && !kubelet.knows(&pod.pod_uid, pod.container_id.as_deref()) {
        kubelet.refresh();
        *refreshed = true;
    }
    let names = kubelet.pod(&pod.pod_uid);
    let container_name = pod.container_id.as_deref().and_then(|id| kubelet.container(id)).map(str::to_string);
    let named = names.is_some() && (pod.container_id.is_none() || container_name.is_some());
    let container = match (&container_name, &pod.container_id) {
        (Some(n), _) => n.clone(),
        (None, Some(id)) => kubernetes::short_id(id).to_string(),
        (None, None) => String::new(),
    };
    let (namespace, name) = names.map_or((String::new(), pod.pod_uid.clone()), |n| (n.namespace, n.name));
    Some(PodIdentity {
        namespace,
        pod: name,
        container,
        pod_uid: pod.pod_uid,
        container_id: pod.container_id,
        qos: pod.qos,
        runtime: pod.runtime,
        named,
    })
}
