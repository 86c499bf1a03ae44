//! Cgroup id → labels. The `cgroup` label is the path below the hierarchy's root, as the kernel's cgroup namespace
//! of the mount sees it (`/system.slice/libvirtd.service`); Kubernetes layouts add `namespace`, `pod` and
//! `container` ([`kubernetes`], names from [`kubelet`]).
//!
//! Every cgroup-keyed family carries the same four labels, with empty `namespace`/`pod`/`container` outside
//! Kubernetes (as cAdvisor does; Prometheus treats an empty label as absent, so this costs nothing in storage and
//! keeps each family's label set fixed). Call [`CgroupNames::labels`] for them.
//!
//! Ids are kernfs node ids = directory inode numbers, unique per hierarchy. Attribution uses the memory controller's
//! hierarchy (v1 `memory` on hybrid hosts, else the unified one) and falls back to the default hierarchy when a task
//! had no memory css. The index is refreshed by walking a hierarchy on a miss and every
//! [`Policy::rescan_interval`]; a known cgroup missing from a walk is deleted, and its series disappear
//! `--cgroups.deleted-ttl` later. `--max-cgroups` caps the cgroups with their own series ([`admission`]).
//! Cgroups are also learned at creation ([`CgroupNames::learn`], from the `cgroup_mkdir` tracepoint, see
//! `crate::births`): a cgroup whose brackets were counted but which was removed before the next scrape (a short
//! `systemd-run --scope`, a job's service) keeps its name instead of becoming `unknown`.

mod admission;
pub mod kubelet;
pub mod kubernetes;
mod mounts;
mod policy;
mod walk;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

// A fast hasher: every scrape looks up each key's (hierarchy, id) here, several times.
use foldhash::{HashMap, HashMapExt};

pub use admission::OTHER;
pub use kubernetes::Qos;
pub use mounts::{Hierarchies, Hierarchy};
pub use policy::{DEFAULT_MAX_CGROUPS, Policy, parse_duration};

use admission::Admission;
use kubelet::KubeletNames;

/// Which hierarchy an id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    Memory,
    Default,
}

/// Label for ids that cannot be resolved (no mm owner, or a cgroup gone before we saw it).
pub const UNKNOWN: &str = "unknown";

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

/// One known cgroup.
#[derive(Clone, Debug)]
pub struct CgroupInfo {
    pub path: String,
    pub kubernetes: Option<PodIdentity>,
    /// When a walk first missed it.
    pub deleted_at: Option<Instant>,
    /// Seen in a map snapshot: keep it (as deleted) when it disappears, instead of forgetting it.
    used: bool,
}

impl CgroupInfo {
    /// Deleted longer than `ttl` ago: its series are no longer exported.
    pub fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.deleted_at.is_some_and(|d| now.saturating_duration_since(d) >= ttl)
    }
}

/// The four cgroup labels of a series.
pub type CgroupLabels = Vec<(&'static str, String)>;

pub struct CgroupNames {
    hierarchies: Hierarchies,
    policy: Policy,
    kubelet: KubeletNames,
    index: HashMap<(Which, u64), CgroupInfo>,
    /// Ids a walk did not find (gone before we saw them), with when; retried after a rescan interval.
    unresolved: HashMap<(Which, u64), Instant>,
    last_walk: HashMap<Which, Instant>,
    admission: Admission,
}

impl CgroupNames {
    /// Kubelet files are looked up below `/` (see [`with_host_root`](Self::with_host_root)).
    pub fn new(hierarchies: Hierarchies, policy: Policy) -> Self {
        Self::with_host_root(hierarchies, policy, "/")
    }

    pub fn with_host_root(hierarchies: Hierarchies, policy: Policy, host_root: impl Into<PathBuf>) -> Self {
        Self {
            hierarchies,
            policy,
            kubelet: KubeletNames::new(host_root),
            index: HashMap::new(),
            unresolved: HashMap::new(),
            last_walk: HashMap::new(),
            admission: Admission::default(),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Resolves the ids of one snapshot (walking each hierarchy at most once), notices deletions, and decides which
    /// cgroups have their own series. Call it with *all* ids of a snapshot before [`labels`](Self::labels).
    pub fn resolve_all(&mut self, ids: impl IntoIterator<Item = (Which, u64)>) {
        self.resolve_at(ids, Instant::now());
    }

    fn resolve_at(&mut self, ids: impl IntoIterator<Item = (Which, u64)>, now: Instant) {
        let mut ids: Vec<(Which, u64)> = ids.into_iter().filter(|(_, id)| *id != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        // Known ids of this snapshot are in use before any walk: a cgroup learned at creation and already removed
        // is then kept as deleted (named until its TTL) rather than forgotten by the walk.
        for k in &ids {
            if let Some(info) = self.index.get_mut(k) {
                info.used = true;
            }
        }
        let rescan = self.policy.rescan_interval();
        for which in [Which::Memory, Which::Default] {
            let stale = self.last_walk.get(&which).is_none_or(|t| now.saturating_duration_since(*t) >= rescan);
            let miss = ids.iter().any(|k| {
                k.0 == which
                    && !self.index.contains_key(k)
                    && self.unresolved.get(k).is_none_or(|t| now.saturating_duration_since(*t) >= rescan)
            });
            if stale || miss {
                self.walk(which, now);
            }
        }
        for k in &ids {
            match self.index.get_mut(k) {
                Some(info) => info.used = true,
                None => {
                    self.unresolved.entry(*k).or_insert(now);
                }
            }
        }
        self.retry_kubelet_names(&ids);
        let ttl = self.policy.deleted_ttl;
        // Oldest cgroups (smallest ids) first, so the cap keeps long-lived cgroups rather than newcomers.
        let live =
            ids.iter().filter_map(|k| self.index.get(k)).filter(|i| !i.expired(now, ttl)).map(|i| i.path.as_str());
        self.admission.update(self.policy.max_cgroups, live);
    }

    /// A cgroup just created at `path` (below the root of its hierarchy, as the kernel's `cgroup_path()` writes it):
    /// its directory is looked up in each hierarchy the agent attributes to while it still exists, and the id is
    /// remembered under the label path the walks would give it. Paths outside the mounted part of a hierarchy, and
    /// cgroups already gone, are ignored (the walks name what they find, as before). Returns how many hierarchies
    /// had it.
    pub fn learn(&mut self, path: &str) -> usize {
        let mut found = 0;
        for which in [Which::Memory, Which::Default] {
            let Some(h) = self.hierarchy(which) else { continue };
            let Some(rel) = below_root(path, &h.root) else { continue };
            let Ok(meta) = std::fs::metadata(h.mount.join(rel)) else { continue };
            if !meta.is_dir() {
                continue;
            }
            let label = walk::label_path(&h.root, std::path::Path::new(rel));
            let id = std::os::unix::fs::MetadataExt::ino(&meta);
            found += 1;
            if self.index.contains_key(&(which, id)) {
                continue;
            }
            self.unresolved.remove(&(which, id));
            let mut refreshed = false;
            let kubernetes = identity(&label, &mut self.kubelet, &mut refreshed);
            self.index.insert((which, id), CgroupInfo { path: label, kubernetes, deleted_at: None, used: false });
        }
        found
    }

    /// Walks one hierarchy: adds new cgroups, marks used ones that vanished as deleted, forgets unused ones.
    fn walk(&mut self, which: Which, now: Instant) {
        self.last_walk.insert(which, now);
        let Some(h) = self.hierarchy(which).cloned() else { return };
        let mut seen: HashMap<u64, String> = HashMap::new();
        walk::walk(&h.mount, &h.mount, &h.root, &mut |ino, path| {
            seen.insert(ino, path);
        });
        self.index.retain(|(w, id), info| {
            if *w != which || seen.contains_key(id) {
                return true;
            }
            if info.used {
                info.deleted_at.get_or_insert(now);
            }
            info.used
        });
        let mut kubelet_refreshed = false;
        for (id, path) in seen {
            if let Some(info) = self.index.get_mut(&(which, id)) {
                if info.deleted_at.is_none() {
                    info.path = path; // kernfs allows renames
                }
                continue;
            }
            self.unresolved.remove(&(which, id));
            let kubernetes = identity(&path, &mut self.kubelet, &mut kubelet_refreshed);
            self.index.insert((which, id), CgroupInfo { path, kubernetes, deleted_at: None, used: false });
        }
        self.unresolved.retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(3600));
    }

    /// Pods whose names were not readable when first seen (the kubelet writes its files as the pod starts).
    fn retry_kubelet_names(&mut self, ids: &[(Which, u64)]) {
        let mut refreshed = false;
        for k in ids {
            let Some(info) = self.index.get_mut(k) else { continue };
            if info.kubernetes.as_ref().is_some_and(|p| !p.named)
                && let Some(id) = identity(&info.path, &mut self.kubelet, &mut refreshed)
            {
                info.kubernetes = Some(id);
            }
        }
    }

    /// Forgets expired cgroups whose keys were just deleted from the kernel maps (`collect::prune`); without it the
    /// index would keep one entry per deleted cgroup for ever under churn. Only entries that are expired go.
    pub fn forget_expired(&mut self, ids: impl IntoIterator<Item = (Which, u64)>) {
        let (now, ttl) = (Instant::now(), self.policy.deleted_ttl);
        for k in ids {
            if self.index.get(&k).is_some_and(|i| i.expired(now, ttl)) {
                self.index.remove(&k);
            }
        }
    }

    /// The `cgroup`, `namespace`, `pod`, `container` labels of an id (after [`resolve_all`](Self::resolve_all)).
    pub fn labels(&self, which: Which, id: u64) -> CgroupLabels {
        let (cgroup, pod) = match self.index.get(&(which, id)) {
            Some(i) if !self.admission.is_admitted(&i.path) => (OTHER.to_string(), None),
            Some(i) => (i.path.clone(), i.kubernetes.as_ref()),
            None => (UNKNOWN.to_string(), None),
        };
        let field = |f: fn(&PodIdentity) -> &String| pod.map(|p| f(p).clone()).unwrap_or_default();
        vec![
            ("cgroup", cgroup),
            ("namespace", field(|p| &p.namespace)),
            ("pod", field(|p| &p.pod)),
            ("container", field(|p| &p.container)),
        ]
    }

    /// The `cgroup` label alone.
    #[cfg(test)]
    pub fn name(&self, which: Which, id: u64) -> &str {
        match self.index.get(&(which, id)) {
            Some(i) if !self.admission.is_admitted(&i.path) => OTHER,
            Some(i) => &i.path,
            None => UNKNOWN,
        }
    }

    /// Whether an id's series are still exported as of now (unknown ids are; deleted ones until their TTL has
    /// passed), for many ids with one clock read.
    pub fn liveness(&self) -> impl Fn(Which, u64) -> bool + '_ {
        let (now, ttl) = (Instant::now(), self.policy.deleted_ttl);
        move |which, id| self.index.get(&(which, id)).is_none_or(|i| !i.expired(now, ttl))
    }

    /// What is known about an id.
    pub fn info(&self, which: Which, id: u64) -> Option<&CgroupInfo> {
        self.index.get(&(which, id))
    }

    /// Whether an id's series are aggregated into `cgroup="other"`.
    pub fn is_aggregated(&self, which: Which, id: u64) -> bool {
        self.index.get(&(which, id)).is_some_and(|i| !self.admission.is_admitted(&i.path))
    }

    /// Cgroups with their own series now (`mmuscope_cgroups_tracked`).
    pub fn tracked(&self) -> usize {
        self.admission.tracked()
    }

    /// Distinct cgroups ever folded into `other` (`mmuscope_cgroups_overflow_total`).
    pub fn overflow_total(&self) -> u64 {
        self.admission.overflow_total()
    }

    fn hierarchy(&self, which: Which) -> Option<&Hierarchy> {
        match which {
            Which::Memory => self.hierarchies.memory.as_ref().or(self.hierarchies.default.as_ref()),
            Which::Default => self.hierarchies.default.as_ref(),
        }
    }
}

/// The part of `path` below a mount's `root` (`""` for the root itself), if `path` is inside it.
fn below_root<'a>(path: &'a str, root: &str) -> Option<&'a str> {
    let root = root.trim_end_matches('/');
    let rest = path.strip_prefix(root)?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return None; // "/kubepods-x" is not below "/kubepods"
    }
    Some(rest.trim_start_matches('/'))
}

/// The Kubernetes identity of a path, with names when the kubelet's files have them (refreshing its index at most
/// once per call site batch).
fn identity(path: &str, kubelet: &mut KubeletNames, refreshed: &mut bool) -> Option<PodIdentity> {
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

#[cfg(test)]
mod tests;
