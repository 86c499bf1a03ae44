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
mod labels;
pub mod mounts;
mod pods;
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
pub use labels::CgroupLabels;
pub use mounts::{Hierarchies, Hierarchy};
pub use pods::PodIdentity;
pub use policy::{DEFAULT_MAX_CGROUPS, Policy, parse_duration};

use admission::Admission;
use kubelet::KubeletNames;
use labels::{ShownLabels, label_text};
use pods::identity;

/// Which hierarchy an id belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = Which)] // the API description keeps its first name and text, byte for byte
pub enum HierarchyKind {
    Memory,
    Default,
}

impl HierarchyKind {
    /// The hierarchy of a map key's cgroup id, from the key's flags.
    pub fn of_key(flags: u32) -> Self {
        if flags & mmuscope_abi::key_flags::DEFAULT_HIERARCHY != 0 { Self::Default } else { Self::Memory }
    }
}

/// Label for ids that cannot be resolved (no mm owner, or a cgroup gone before we saw it).
pub const UNKNOWN: &str = "unknown";

/// One known cgroup.
#[derive(Clone, Debug)]
pub struct CgroupInfo {
    pub path: String,
    pub kubernetes: Option<PodIdentity>,
    /// When a walk first missed it.
    pub deleted_at: Option<Instant>,
    /// Seen in a map snapshot: keep it (as deleted) when it disappears, instead of forgetting it.
    used: bool,
    /// Folded into `cgroup="other"` by `--max-cgroups`: the admission decision for its path, kept here so that
    /// labelling a series is one index lookup (recomputed whenever the admission or the index changes).
    aggregated: bool,
    /// [`CgroupLabels`]' rank and text of the labels it shows (recomputed with `aggregated`).
    rank: u32,
    text: String,
}

impl CgroupInfo {
    /// Deleted longer than `ttl` ago: its series are no longer exported.
    pub fn expired(&self, now: Instant, ttl: Duration) -> bool {
        self.deleted_at.is_some_and(|d| now.saturating_duration_since(d) >= ttl)
    }
}

pub struct CgroupNames {
    hierarchies: Hierarchies,
    policy: Policy,
    kubelet: KubeletNames,
    index: HashMap<(HierarchyKind, u64), CgroupInfo>,
    /// Ids a walk did not find (gone before we saw them), with when; retried after a rescan interval.
    unresolved: HashMap<(HierarchyKind, u64), Instant>,
    last_walk: HashMap<HierarchyKind, Instant>,
    admission: Admission,
    /// Bumped whenever an entry is added, renamed, marked deleted or removed: with the live ids it says whether
    /// the admission's input changed since the last scrape.
    generation: u64,
    /// Fingerprint of the last admission input (policy, generation, live ids). Scrapes of a steady host repeat it,
    /// and then the admission is not recomputed.
    admitted_for: Option<u64>,
    /// The `other` and `unknown` label sets, ranked and rendered.
    other: ShownLabels,
    unknown: ShownLabels,
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
            generation: 0,
            admitted_for: None,
            other: ShownLabels::new(OTHER),
            unknown: ShownLabels::new(UNKNOWN),
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Resolves the ids of one snapshot (walking each hierarchy at most once), notices deletions, and decides which
    /// cgroups have their own series. Call it with *all* ids of a snapshot before [`labels`](Self::labels).
    pub fn resolve_all(&mut self, ids: impl IntoIterator<Item = (HierarchyKind, u64)>) {
        self.resolve_at(ids, Instant::now());
    }

    fn resolve_at(&mut self, ids: impl IntoIterator<Item = (HierarchyKind, u64)>, now: Instant) {
        let mut ids: Vec<(HierarchyKind, u64)> = ids.into_iter().filter(|(_, id)| *id != 0).collect();
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
        // One pass over the ids when no walk is due (every scrape of a steady host); again after walking.
        let (mut live, missed) = self.mark(&ids, now);
        let mut walked = false;
        for (which, missed) in [HierarchyKind::Memory, HierarchyKind::Default].into_iter().zip(missed) {
            let stale = self.last_walk.get(&which).is_none_or(|t| now.saturating_duration_since(*t) >= rescan);
            if stale || missed {
                self.walk(which, now);
                walked = true;
            }
        }
        if walked {
            // Ids the walk did not find either wait a rescan interval before they may cause another walk (else an
            // id of a cgroup gone before we saw it would walk the hierarchy at every scrape).
            ids.iter().filter(|k| !self.index.contains_key(k)).for_each(|k| _ = self.unresolved.insert(*k, now));
            live = self.mark(&ids, now).0;
        }
        self.admit(&live);
    }

    /// Marks the known ones of `ids` used, retries kubelet names, remembers the unknown ones; returns the live ids
    /// and, per hierarchy ([`HierarchyKind::Memory`], [`HierarchyKind::Default`]), whether an unknown id is due for a walk.
    fn mark(&mut self, ids: &[(HierarchyKind, u64)], now: Instant) -> (Vec<(HierarchyKind, u64)>, [bool; 2]) {
        let (rescan, ttl) = (self.policy.rescan_interval(), self.policy.deleted_ttl);
        let mut live = Vec::with_capacity(ids.len());
        let mut missed = [false; 2];
        let mut kubelet_refreshed = false;
        for k in ids {
            let Some(info) = self.index.get_mut(k) else {
                let unresolved = self.unresolved.entry(*k).or_insert(now);
                // Unknown since this call, or since a rescan interval: a walk may find it now.
                if *unresolved == now || now.saturating_duration_since(*unresolved) >= rescan {
                    missed[usize::from(k.0 == HierarchyKind::Default)] = true;
                }
                continue;
            };
            info.used = true;
            // Pods whose names were not readable when first seen (the kubelet writes its files as the pod starts).
            if info.kubernetes.as_ref().is_some_and(|p| !p.named)
                && let Some(id) = identity(&info.path, &mut self.kubelet, &mut kubelet_refreshed)
            {
                info.kubernetes = Some(id);
                self.generation += 1; // new label values
            }
            if !info.expired(now, ttl) {
                live.push(*k);
            }
        }
        (live, missed)
    }

    /// Decides which of the `live` cgroups have their own series, unless nothing changed since the last call.
    /// Oldest cgroups (smallest ids, the order of `live`) first, so the cap keeps long-lived cgroups rather than
    /// newcomers.
    fn admit(&mut self, live: &[(HierarchyKind, u64)]) {
        // Fixed seed: the fingerprint must be comparable across calls.
        let state = foldhash::quality::FixedState::with_seed(0x6d6d_7573);
        let fingerprint = std::hash::BuildHasher::hash_one(&state, (self.policy.max_cgroups, self.generation, live));
        if self.admitted_for.replace(fingerprint) == Some(fingerprint) {
            return;
        }
        let paths = live.iter().filter_map(|k| self.index.get(k)).map(|i| i.path.as_str());
        self.admission.update(self.policy.max_cgroups, paths);
        for info in self.index.values_mut() {
            info.aggregated = !self.admission.is_admitted(&info.path);
        }
        self.rank_labels();
    }

    /// Numbers the distinct label sets the index shows (its cgroups', `other`, `unknown`) in exposition order, so
    /// that a scrape sorts its series by integers: comparing paths was 15 % of a collection at 10k cgroups
    /// (measured). Equal label sets get equal ranks. Also renders each cgroup's own label text. Called whenever an
    /// entry, its labels or the admission change.
    fn rank_labels(&mut self) {
        const OTHER_LABELS: CgroupLabels<'static> = CgroupLabels::new(OTHER, "", "", "");
        const UNKNOWN_LABELS: CgroupLabels<'static> = CgroupLabels::new(UNKNOWN, "", "", "");
        let (ranks, other, unknown) = {
            let mut shown: Vec<(CgroupLabels<'_>, Option<(HierarchyKind, u64)>)> = self
                .index
                .iter()
                .map(|(k, i)| (if i.aggregated { OTHER_LABELS } else { own_labels(i) }, Some(*k)))
                .collect();
            shown.extend([(OTHER_LABELS, None), (UNKNOWN_LABELS, None)]);
            // All with rank 0 here, so the values decide.
            shown.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let (mut ranks, mut other, mut unknown) = (Vec::with_capacity(shown.len()), 0, 0);
            let mut rank = 0u32;
            for (i, (labels, key)) in shown.iter().enumerate() {
                if i > 0 && shown[i - 1].0 != *labels {
                    rank += 1;
                }
                match key {
                    Some(k) => ranks.push((*k, rank)),
                    None if labels.cgroup == OTHER => other = rank,
                    None => unknown = rank,
                }
            }
            (ranks, other, unknown)
        };
        for (k, rank) in ranks {
            if let Some(info) = self.index.get_mut(&k) {
                info.rank = rank;
            }
        }
        (self.other.rank, self.unknown.rank) = (other, unknown);
        for info in self.index.values_mut() {
            info.text = if info.aggregated { String::new() } else { label_text(&own_labels(info)) };
        }
    }

    /// A cgroup just created at `path` (below the root of its hierarchy, as the kernel's `cgroup_path()` writes it):
    /// its directory is looked up in each hierarchy the agent attributes to while it still exists, and the id is
    /// remembered under the label path the walks would give it. Paths outside the mounted part of a hierarchy, and
    /// cgroups already gone, are ignored (the walks name what they find, as before). Returns how many hierarchies
    /// had it.
    pub fn learn(&mut self, path: &str) -> usize {
        let mut found = 0;
        for which in [HierarchyKind::Memory, HierarchyKind::Default] {
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
            let (aggregated, rank, text) = (false, 0, String::new());
            let info = CgroupInfo { path: label, kubernetes, deleted_at: None, used: false, aggregated, rank, text };
            self.index.insert((which, id), info);
            self.generation += 1; // a new label set: admission and ranks are recomputed at the next resolve
        }
        found
    }

    /// Walks one hierarchy: adds new cgroups, marks used ones that vanished as deleted, forgets unused ones.
    fn walk(&mut self, which: HierarchyKind, now: Instant) {
        self.last_walk.insert(which, now);
        let Some(h) = self.hierarchy(which).cloned() else { return };
        let mut seen: HashMap<u64, String> = HashMap::new();
        walk::walk(&h.mount, &h.mount, &h.root, &mut |ino, path| {
            seen.insert(ino, path);
        });
        let mut changed = false;
        self.index.retain(|(w, id), info| {
            if *w != which || seen.contains_key(id) {
                return true;
            }
            changed |= !info.used || info.deleted_at.is_none();
            if info.used {
                info.deleted_at.get_or_insert(now);
            }
            info.used
        });
        let mut kubelet_refreshed = false;
        for (id, path) in seen {
            if let Some(info) = self.index.get_mut(&(which, id)) {
                if info.deleted_at.is_none() && info.path != path {
                    info.path = path; // kernfs allows renames
                    changed = true;
                }
                continue;
            }
            self.unresolved.remove(&(which, id));
            let kubernetes = identity(&path, &mut self.kubelet, &mut kubelet_refreshed);
            let (aggregated, rank, text) = (false, 0, String::new());
            let info = CgroupInfo { path, kubernetes, deleted_at: None, used: false, aggregated, rank, text };
            self.index.insert((which, id), info);
            changed = true;
        }
        if changed {
            self.generation += 1;
        }
        self.unresolved.retain(|_, t| now.saturating_duration_since(*t) < Duration::from_secs(3600));
    }

    /// Forgets expired cgroups whose keys were just deleted from the kernel maps (`collect::prune`); without it the
    /// index would keep one entry per deleted cgroup for ever under churn. Only entries that are expired go.
    pub fn forget_expired(&mut self, ids: impl IntoIterator<Item = (HierarchyKind, u64)>) {
        let (now, ttl) = (Instant::now(), self.policy.deleted_ttl);
        for k in ids {
            if self.index.get(&k).is_some_and(|i| i.expired(now, ttl)) {
                self.index.remove(&k);
                self.generation += 1;
            }
        }
    }

    /// The `cgroup`, `namespace`, `pod`, `container` labels of an id (after [`resolve_all`](Self::resolve_all)).
    pub fn labels(&self, which: HierarchyKind, id: u64) -> CgroupLabels<'_> {
        match self.index.get(&(which, id)) {
            Some(i) if i.aggregated => self.other.labels(),
            Some(i) => CgroupLabels { rank: i.rank, text: &i.text, ..own_labels(i) },
            None => self.unknown.labels(),
        }
    }

    /// The `cgroup` label alone.
    #[cfg(test)]
    pub fn name(&self, which: HierarchyKind, id: u64) -> &str {
        match self.index.get(&(which, id)) {
            Some(i) if i.aggregated => OTHER,
            Some(i) => &i.path,
            None => UNKNOWN,
        }
    }

    /// Whether an id's series are still exported as of now (unknown ids are; deleted ones until their TTL has
    /// passed), for many ids with one clock read.
    pub fn liveness(&self) -> impl Fn(HierarchyKind, u64) -> bool + '_ {
        let (now, ttl) = (Instant::now(), self.policy.deleted_ttl);
        move |which, id| self.index.get(&(which, id)).is_none_or(|i| !i.expired(now, ttl))
    }

    /// The id of a live cgroup by its `cgroup` label path, the memory hierarchy's first (`/api/v1/stacks?cgroup=`).
    pub fn id_of(&self, path: &str) -> Option<(HierarchyKind, u64)> {
        let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
        self.index
            .iter()
            .filter(|(_, i)| i.deleted_at.is_none() && i.path == path)
            .map(|(k, _)| *k)
            .min_by_key(|(which, _)| *which)
    }

    /// What is known about an id.
    pub fn info(&self, which: HierarchyKind, id: u64) -> Option<&CgroupInfo> {
        self.index.get(&(which, id))
    }

    /// Whether an id's series are aggregated into `cgroup="other"`.
    pub fn is_aggregated(&self, which: HierarchyKind, id: u64) -> bool {
        self.index.get(&(which, id)).is_some_and(|i| i.aggregated)
    }

    /// Cgroups with their own series now (`mmuscope_cgroups_tracked`).
    pub fn tracked(&self) -> usize {
        self.admission.tracked()
    }

    /// Distinct cgroups ever folded into `other` (`mmuscope_cgroups_overflow_total`).
    pub fn overflow_total(&self) -> u64 {
        self.admission.overflow_total()
    }

    fn hierarchy(&self, which: HierarchyKind) -> Option<&Hierarchy> {
        match which {
            HierarchyKind::Memory => self.hierarchies.memory.as_ref().or(self.hierarchies.default.as_ref()),
            HierarchyKind::Default => self.hierarchies.default.as_ref(),
        }
    }
}

/// The labels of a cgroup that has its own series (rank 0).
fn own_labels(info: &CgroupInfo) -> CgroupLabels<'_> {
    let pod = info.kubernetes.as_ref();
    CgroupLabels::new(
        &info.path,
        pod.map_or("", |p| &p.namespace),
        pod.map_or("", |p| &p.pod),
        pod.map_or("", |p| &p.container),
    )
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

#[cfg(test)]
mod tests;
