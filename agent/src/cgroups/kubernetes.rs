//! Kubernetes cgroup layouts: pod UID, QoS class and container id from a cgroup path.
//!
//! The kubelet places pods below a `kubepods` root, with either cgroup driver:
//!
//! * systemd: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/
//!   cri-containerd-<id>.scope` (CRI-O: `crio-<id>.scope`, `crio-conmon-<id>.scope`; Docker via cri-dockerd:
//!   `docker-<id>.scope`); Guaranteed pods sit directly below `kubepods.slice` (`kubepods-pod<uid>.slice`).
//! * cgroupfs: `/kubepods/burstable/pod<uid>/<id>` (CRI-O: `crio-<id>`), Guaranteed: `/kubepods/pod<uid>/<id>`.
//!
//! The `kubepods` part may be nested (kind and other kubelet-in-a-container set-ups use `/kubelet.slice/
//! kubelet-kubepods.slice/...`), so the pod is found as the first path component that parses as a pod cgroup below a
//! component that names the kubepods root. Names (namespace, pod, container) are not in the path; see
//! [`super::kubelet`].

/// What a cgroup path says about a Kubernetes pod and container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodCgroup {
    /// Pod UID in its canonical dashed form.
    pub pod_uid: String,
    pub qos: Qos,
    /// Container id (64 hex digits for containerd/CRI-O/Docker), when the path is a container's cgroup (or below it).
    pub container_id: Option<String>,
    /// The runtime named by the container cgroup's prefix (`containerd`, `crio`, `docker`; empty for cgroupfs ids).
    pub runtime: &'static str,
}

/// Kubernetes QoS class, from the `kubepods` sub-tree the pod sits in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Qos {
    #[default]
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Parses a cgroup path (below the hierarchy root). `None` for anything that is not at or below a pod cgroup.
pub fn parse(path: &str) -> Option<PodCgroup> {
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let root = components.iter().position(|c| is_kubepods_root(c))?;
    let mut qos = Qos::Guaranteed;
    for (i, c) in components.iter().enumerate().skip(root + 1) {
        if let Some(q) = qos_component(c) {
            qos = q;
            continue;
        }
        let uid = pod_uid(c)?;
        let (container_id, runtime) = match components.get(i + 1) {
            Some(next) => container(next).map_or((None, ""), |(id, rt)| (Some(id), rt)),
            None => (None, ""),
        };
        return Some(PodCgroup { pod_uid: uid, qos, container_id, runtime });
    }
    None
}

/// `kubepods`, `kubepods.slice`, and nested kubelets' `kubelet-kubepods.slice`.
fn is_kubepods_root(c: &str) -> bool {
    c == "kubepods" || c == "kubepods.slice" || (c.ends_with("-kubepods.slice"))
}

fn qos_component(c: &str) -> Option<Qos> {
    let c = c.strip_suffix(".slice").unwrap_or(c);
    // systemd: `kubepods-burstable` (or `kubelet-kubepods-burstable`); cgroupfs: `burstable`.
    let last = c.rsplit('-').next().unwrap_or(c);
    let is_slice_name = c == last || c.ends_with(&format!("kubepods-{last}"));
    match last {
        "burstable" if is_slice_name => Some(Qos::Burstable),
        "besteffort" if is_slice_name => Some(Qos::BestEffort),
        _ => None,
    }
}

/// `pod<uid>` (cgroupfs) or `...-pod<uid_with_underscores>.slice` (systemd) → dashed UID.
fn pod_uid(c: &str) -> Option<String> {
    let raw = match c.strip_suffix(".slice") {
        Some(unit) => unit.rsplit_once("-pod").map(|(_, uid)| uid)?,
        None => c.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_uid(&uid).then_some(uid)
}

/// 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A container cgroup: `cri-containerd-<id>.scope`, `crio-<id>.scope`, `crio-conmon-<id>.scope`, `docker-<id>.scope`,
/// `crio-<id>`, or a bare `<id>` (cgroupfs with containerd/Docker).
fn container(c: &str) -> Option<(String, &'static str)> {
    let unit = c.strip_suffix(".scope").unwrap_or(c);
    let (id, runtime) =
        [("cri-containerd-", "containerd"), ("crio-conmon-", "crio"), ("crio-", "crio"), ("docker-", "docker")]
            .iter()
            .find_map(|(prefix, rt)| unit.strip_prefix(prefix).map(|id| (id, *rt)))
            .unwrap_or((unit, ""));
    let hex = id.len() >= 12 && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    hex.then(|| (id.to_ascii_lowercase(), runtime))
}

/// The short (12 hex digits) form used when no container name is known, as `docker ps` and `crictl ps` show it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8";
    const ID: &str = "3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e";

    fn pod(qos: Qos, container_id: Option<&str>, runtime: &'static str) -> Option<PodCgroup> {
        Some(PodCgroup { pod_uid: UID.into(), qos, container_id: container_id.map(Into::into), runtime })
    }

    #[test]
    fn systemd_driver_containerd_crio_docker() {
        let u = UID.replace('-', "_");
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{ID}.scope"
            )),
            pod(Qos::Burstable, Some(ID), "containerd")
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
            )),
            pod(Qos::BestEffort, Some(ID), "crio")
        );
        assert_eq!(
            parse(&format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-conmon-{ID}.scope"
            )),
            pod(Qos::BestEffort, Some(ID), "crio")
        );
        assert_eq!(
            parse(&format!("/kubepods.slice/kubepods-pod{u}.slice/docker-{ID}.scope")),
            pod(Qos::Guaranteed, Some(ID), "docker")
        );
    }

    #[test]
    fn cgroupfs_driver() {
        assert_eq!(parse(&format!("/kubepods/burstable/pod{UID}/{ID}")), pod(Qos::Burstable, Some(ID), ""));
        assert_eq!(parse(&format!("/kubepods/besteffort/pod{UID}/crio-{ID}")), pod(Qos::BestEffort, Some(ID), "crio"));
        assert_eq!(parse(&format!("/kubepods/pod{UID}/{ID}")), pod(Qos::Guaranteed, Some(ID), ""));
    }

    #[test]
    fn pod_level_and_below_container() {
        let u = UID.replace('-', "_");
        assert_eq!(
            parse(&format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice")),
            pod(Qos::Burstable, None, "")
        );
        // A cgroup a container created below its own (systemd in a pod, or nested runtimes) keeps the container.
        assert_eq!(parse(&format!("/kubepods/pod{UID}/{ID}/init.scope")), pod(Qos::Guaranteed, Some(ID), ""));
    }

    #[test]
    fn nested_kubelet_as_in_kind() {
        let u = UID.replace('-', "_");
        let path = format!(
            "/system.slice/docker-{ID}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
             kubelet-kubepods-besteffort-pod{u}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(parse(&path), pod(Qos::BestEffort, Some(ID), "containerd"));
    }

    #[test]
    fn not_kubernetes() {
        for p in [
            "/",
            "/system.slice/libvirtd.service",
            &format!("/system.slice/docker-{ID}.scope"),
            "/kubepods.slice",
            "/kubepods.slice/kubepods-burstable.slice",
            "/kubepods/burstable",
            "/kubepods/podnot-a-uid",
            "/user.slice/user-1000.slice/pod8f3a2b1c-4d5e-6f70-8192-a3b4c5d6e7f8",
            "/mmuscope-test/kvm-madvise-1",
        ] {
            assert_eq!(parse(p), None, "{p}");
        }
    }

    #[test]
    fn odd_container_names_are_not_ids() {
        assert_eq!(parse(&format!("/kubepods/pod{UID}/not-hex")), pod(Qos::Guaranteed, None, ""));
        assert_eq!(short_id(ID), "3f4e5d6c7b8a");
        assert_eq!(short_id("abc"), "abc");
    }
}
