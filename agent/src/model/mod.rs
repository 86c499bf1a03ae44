//! The per-cgroup domain view behind the JSON API and `mmuscope top`: one record per cgroup id, built from the same
//! map snapshot and cgroup index as `/metrics` (so the two never disagree), but not subject to the cardinality cap.

mod quantile;

use std::collections::{BTreeMap, HashMap};

use mmuscope_abi::{BracketStats, DoubleKind, HIST_BUCKETS};
use serde::Serialize;
use utoipa::ToSchema;

pub use quantile::quantile_seconds;

use crate::{
    cgroups::{CgroupNames, HierarchyKind, Qos, UNKNOWN},
    collect::Snapshot,
    kernel::EventNames,
};

/// Invalidation activity of one cgroup.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CgroupView {
    /// Cgroup id (kernfs node id, the directory's inode number) in its hierarchy; 0 when the owner was unknown.
    pub id: u64,
    /// The hierarchy the id belongs to: the memory controller's (`memory`) or the default one.
    pub hierarchy: HierarchyKind,
    /// Path below the hierarchy root, as in the `cgroup` label (`unknown` when unresolved).
    pub cgroup: String,
    /// Kubernetes namespace (empty outside Kubernetes or when not readable).
    pub namespace: String,
    /// Pod name (the pod UID when the name is not readable; empty outside Kubernetes).
    pub pod: String,
    /// Container name (the short container id when not readable; empty for pod-level cgroups and outside Kubernetes).
    pub container: String,
    /// Details of the Kubernetes layout, when the path is a pod's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesView>,
    /// In `/metrics` this cgroup's series are aggregated into `cgroup="other"` (`--max-cgroups`).
    pub aggregated: bool,
    /// The cgroup directory is gone; its series disappear after `--cgroups.deleted-ttl`.
    pub deleted: bool,
    /// Completed invalidations (brackets; in tracepoint mode KVM callbacks).
    pub invalidations: u64,
    /// `invalidations` by event type (`unknown` in tracepoint mode).
    pub invalidations_by_event: BTreeMap<String, u64>,
    /// `invalidations` by the subscriber kinds they reached: the `subscriber` label of
    /// `mmuscope_invalidations_total` (`kvm`, `kvm+mmuscope_mirror`, ...; `kvm` in tracepoint mode).
    pub invalidations_by_subscriber: BTreeMap<String, u64>,
    /// Bracket latency; null in modes without latency (tracepoint).
    pub latency: Option<LatencyView>,
    /// Double notifications (all kinds); null when the secondary-TLB probe family is not attached.
    pub double_notifications: Option<u64>,
    /// Pages copied at fork because they may be DMA-pinned; null when the fork family is not attached.
    pub fork_pinned_page_copies: Option<u64>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KubernetesView {
    pub pod_uid: String,
    /// Full container id, when the cgroup is a container's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub qos: Qos,
    /// Runtime named by the container cgroup (`containerd`, `crio`, `docker`; empty when not named).
    pub runtime: String,
    /// Namespace, pod and container names came from the kubelet's files (else UID / short id fallbacks).
    pub named: bool,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LatencyView {
    pub count: u64,
    pub sum_seconds: f64,
    /// Estimated from the log2 buckets (linear inside the bucket, like `histogram_quantile`).
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

/// Which optional families are attached, so absent data is `null` rather than a misleading 0.
#[derive(Clone, Copy, Debug, Default)]
pub struct Available {
    pub latency: bool,
    pub fork_copies: bool,
    pub double_notifications: bool,
}

#[derive(Default)]
struct Acc {
    by_event: BTreeMap<String, u64>,
    by_subscriber: BTreeMap<String, u64>,
    hist: Option<BracketStats>,
    fork_copies: u64,
    doubles: u64,
}

/// One record per `(hierarchy, id)` of the snapshot, in id order.
pub fn cgroups(snap: &Snapshot, names: &CgroupNames, events: &EventNames, available: Available) -> Vec<CgroupView> {
    let mut acc: HashMap<(HierarchyKind, u64), Acc> = HashMap::new();
    for (k, s) in &snap.brackets {
        let a = acc.entry((HierarchyKind::of_key(k.flags), k.cgroup_id)).or_default();
        *a.by_event.entry(events.name(k.event.into()).to_string()).or_default() += s.count;
        *a.by_subscriber.entry(snap.subscriber(k.subscribers).to_string()).or_default() += s.count;
        let h = a.hist.get_or_insert_with(BracketStats::default);
        h.count += s.count;
        h.sum_ns += s.sum_ns;
        for i in 0..HIST_BUCKETS {
            h.buckets[i] += s.buckets[i];
        }
    }
    for (k, n) in &snap.kvm_unmaps {
        let a = acc.entry((HierarchyKind::of_key(k.flags), k.cgroup_id)).or_default();
        *a.by_event.entry("unknown".to_string()).or_default() += n;
        *a.by_subscriber.entry(crate::subscribers::KVM.to_string()).or_default() += n;
    }
    for (k, s) in &snap.forks {
        acc.entry((HierarchyKind::of_key(k.flags), k.cgroup_id)).or_default().fork_copies += s.copies;
    }
    for (k, s) in &snap.doubles {
        if DoubleKind::from_u32(k.kind).is_some_and(|d| d != DoubleKind::Avoided) {
            acc.entry((HierarchyKind::of_key(k.flags), k.cgroup_id)).or_default().doubles += s.count;
        }
    }
    let mut out: Vec<CgroupView> =
        acc.into_iter().map(|((which, id), a)| view(which, id, a, names, available)).collect();
    out.sort_by_key(|v| (v.id, v.hierarchy));
    out
}

fn view(which: HierarchyKind, id: u64, a: Acc, names: &CgroupNames, available: Available) -> CgroupView {
    let labels = names.labels(which, id);
    let info = names.info(which, id);
    let pod = info.and_then(|i| i.kubernetes.as_ref());
    let latency = a.hist.filter(|_| available.latency).map(|h| LatencyView {
        count: h.count,
        sum_seconds: h.sum_ns as f64 / 1e9,
        p50_seconds: quantile_seconds(&h, 0.5),
        p99_seconds: quantile_seconds(&h, 0.99),
    });
    CgroupView {
        id,
        hierarchy: which,
        // The real path even when aggregated in /metrics.
        cgroup: info.map_or_else(|| UNKNOWN.to_string(), |i| i.path.clone()),
        namespace: pod.map_or(labels.namespace, |p| &p.namespace).to_string(),
        pod: pod.map_or(labels.pod, |p| &p.pod).to_string(),
        container: pod.map_or(labels.container, |p| &p.container).to_string(),
        kubernetes: pod.map(|p| KubernetesView {
            pod_uid: p.pod_uid.clone(),
            container_id: p.container_id.clone(),
            qos: p.qos,
            runtime: p.runtime.to_string(),
            named: p.named,
        }),
        aggregated: names.is_aggregated(which, id),
        deleted: info.is_some_and(|i| i.deleted_at.is_some()),
        invalidations: a.by_event.values().sum(),
        invalidations_by_event: a.by_event,
        invalidations_by_subscriber: a.by_subscriber,
        latency,
        double_notifications: available.double_notifications.then_some(a.doubles),
        fork_pinned_page_copies: available.fork_copies.then_some(a.fork_copies),
    }
}
