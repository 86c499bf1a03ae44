//! Ground truth: what a workload run did, as the single JSON object `mmuscope-workload` prints on stdout.
//!
//! Shared by the workload (which serialises it) and the harness (which deserialises the same types), so the schema
//! lives only here. Shape (schema 1):
//!
//! ```json
//! { "schema_version": 1,
//!   "scenario": "kvm-madvise", "params": { "iterations": 1000, "region_bytes": 2097152, "page_bytes": 4096 },
//!   "pid": 1234,
//!   "cgroups": { "default":   { "path": "/mmuscope-test/kvm-madvise-1234", "id": 6100, "dir": "/sys/fs/cgroup/unified/…" },
//!                "memory_v1": { "path": "/mmuscope-test/kvm-madvise-1234", "id": 6101, "dir": "/sys/fs/cgroup/memory/…" },
//!                "attribution": "memory_v1" },
//!   "vms": 1,
//!   "invalidations": { "brackets": { "clear": 1000 }, "kvm_unmap_hva_range": 1000,
//!                      "sources": [ { "event": "clear", "count": 1000, "vms": 1, "cause": "…", "kernel_path": "…" } ] } }
//! ```
//!
//! Extending: a new scenario adds a [`ScenarioParams`] variant; a new kind of truth (pinned-page copies at fork, THP
//! splits, …) adds an `Option<…>` field to [`GroundTruth`] with `#[serde(default, skip_serializing_if =
//! "Option::is_none")]`, so older outputs still parse. Bump [`SCHEMA_VERSION`] only for incompatible changes.
//!
//! Optional parts (absent unless the scenario produces them): `kernel_api` (the secondary-TLB API the workload found
//! in BTF), `double_notifications` and `secondary_tlb` (expectations per kernel API, see [`notifications`]), `fork`,
//! `thp`, `swap` and `cross_cgroup` (measured page outcomes, see [`outcomes`]). A source whose bracket was started by
//! another process names it in `initiator_pid`.

mod cause;
mod notifications;
mod outcomes;
mod params;

pub use cause::Cause;
pub use notifications::{
    DoubleKind, DoubleNotificationTruth, DoubleSource, KindBound, KindTotal, SecondaryTlbApi, SecondaryTlbSource,
    SecondaryTlbTruth, TlbContext, TlbScope,
};
pub use outcomes::{
    ChangePteTruth, CrossCgroupTruth, ForkTruth, HugetlbForkTruth, IntervalRange, IntervalTruth, KVM_KIND, MIRROR_KIND,
    SubscriberSplitTruth, SwapTruth, TlbSubscriberTruth,
};
pub use params::{
    CrossCgroupParams, ForkParams, HugetlbForkParams, KsmMergeParams, KvmMprotectParams, KvmMunmapParams,
    MirrorCollideParams, MremapMoveParams, MultiVmParams, RdmaOdpParams, SwapOutParams, ThpPartialMunmapParams,
    ThpSplitParams, ThpSwapOutParams,
};

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupPlacement;

/// Version of this JSON schema; readers refuse other versions.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything a workload run knows it caused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub schema_version: u32,
    /// `"scenario": "<name>", "params": {…}`.
    #[serde(flatten)]
    pub scenario: ScenarioParams,
    pub pid: u32,
    pub cgroups: CgroupPlacement,
    /// KVM VMs (mmu_notifier subscriptions) the scenario created on its mm.
    pub vms: u32,
    pub invalidations: InvalidationTruth,
    /// The secondary-TLB API of the kernel the run happened on, from its BTF (scenarios with per-API parts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_api: Option<SecondaryTlbApi>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_notifications: Option<DoubleNotificationTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_tlb: Option<SecondaryTlbTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fork: Option<ForkTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_fork: Option<HugetlbForkTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_cgroup: Option<CrossCgroupTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<IntervalTruth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tlb_subscriber: Option<TlbSubscriberTruth>,
    /// `change_pte` notifications, on kernels whose BTF has `__mmu_notifier_change_pte`; `None` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_pte: Option<ChangePteTruth>,
    /// Brackets by `subscriber`, where not every bracket reaches every subscriber of the mm; `None`: each reaches
    /// all the workload registered (the VMs, the module).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<SubscriberSplitTruth>,
}

/// The scenario and its parameters, one variant per scenario (names as on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scenario", content = "params", rename_all = "kebab-case")]
pub enum ScenarioParams {
    KvmMadvise(KvmMadviseParams),
    KvmMunmap(KvmMunmapParams),
    KvmMprotect(KvmMprotectParams),
    ThpPartialMunmap(ThpPartialMunmapParams),
    MremapMove(MremapMoveParams),
    ThpSplit(ThpSplitParams),
    ThpSwapOut(ThpSwapOutParams),
    ForkPinned(ForkParams),
    ForkPinnedThp(ForkParams),
    ForkUnpinned(ForkParams),
    ForkPinnedHugetlb(HugetlbForkParams),
    ForkUnpinnedHugetlb(HugetlbForkParams),
    CrossCgroup(CrossCgroupParams),
    MultiVm(MultiVmParams),
    SwapOut(SwapOutParams),
    MirrorCollide(MirrorCollideParams),
    RdmaOdp(RdmaOdpParams),
    KsmMerge(KsmMergeParams),
}

impl ScenarioParams {
    pub fn name(&self) -> &'static str {
        match self {
            Self::KvmMadvise(_) => "kvm-madvise",
            Self::KvmMunmap(_) => "kvm-munmap",
            Self::KvmMprotect(_) => "kvm-mprotect",
            Self::ThpPartialMunmap(_) => "thp-partial-munmap",
            Self::MremapMove(_) => "mremap-move",
            Self::ThpSplit(_) => "thp-split",
            Self::ThpSwapOut(_) => "thp-swap-out",
            Self::ForkPinned(_) => "fork-pinned",
            Self::ForkPinnedThp(_) => "fork-pinned-thp",
            Self::ForkUnpinned(_) => "fork-unpinned",
            Self::ForkPinnedHugetlb(_) => "fork-pinned-hugetlb",
            Self::ForkUnpinnedHugetlb(_) => "fork-unpinned-hugetlb",
            Self::CrossCgroup(_) => "cross-cgroup",
            Self::MultiVm(_) => "multi-vm",
            Self::SwapOut(_) => "swap-out",
            Self::MirrorCollide(_) => "mirror-collide",
            Self::RdmaOdp(_) => "rdma-odp",
            Self::KsmMerge(_) => "ksm-merge",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmMadviseParams {
    pub iterations: u64,
    /// Size of the guest-memory region (one memslot).
    pub region_bytes: u64,
    pub page_bytes: u64,
    /// Pages at the region's start also under the test module's interval notifier (0: none).
    #[serde(default)]
    pub interval_pages: u64,
}

/// `enum mmu_notifier_event`, in the lowercase names the agent and the truth use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Unmap,
    Clear,
    ProtectionVma,
    ProtectionPage,
    SoftDirty,
    Release,
    Migrate,
    Exclusive,
}

/// Invalidations of this process's mm while at least one KVM notifier is registered on it: the brackets some
/// subscriber sees. Outside that window no subscriber sees them — but `__mmu_notifier_invalidate_range_start`
/// still runs for every later bracket of the mm (munmaps after the VM is gone, `exit_mmap`), because
/// `mm->notifier_subscriptions` stays allocated until the mm is freed (`mm_has_notifiers` tests the pointer, not
/// the list). Those brackets notify nobody, are not part of any truth, and a probe on the function must skip
/// brackets whose mm has an empty subscriber list (no `list` entry and no interval notifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvalidationTruth {
    /// Brackets (`__mmu_notifier_invalidate_range_start` … `_end`) by event type.
    pub brackets: BTreeMap<NotifyEvent, u64>,
    /// Expected `kvm:kvm_unmap_hva_range` events from this pid: every bracket fires it once per registered VM.
    pub kvm_unmap_hva_range: u64,
    /// Where every bracket comes from; sums to `brackets` and `kvm_unmap_hva_range`.
    pub sources: Vec<BracketSource>,
}

/// One deliberate source of brackets, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BracketSource {
    pub event: NotifyEvent,
    pub count: u64,
    /// VMs registered on the mm while these brackets ran.
    pub vms: u32,
    /// The user-space action, e.g. `madvise(MADV_DONTNEED) of one present page`.
    pub cause: String,
    /// The kernel path that opens the bracket.
    pub kernel_path: String,
    /// The process that started these brackets when it is not the run's own process (`pid`): its
    /// `kvm:kvm_unmap_hva_range` events carry this pid, while the owner of the memory stays `cgroups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_pid: Option<u32>,
    /// The `cause` label these brackets get from the initiating task's context (its system call,
    /// a fault, a kernel thread), which every probe mode sees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_cause: Option<String>,
    /// The more precise `cause` a caller hook gives where it is attached (fentry and kprobe modes), e.g.
    /// `thp_split` for a split inside munmap; `None` when no caller hook applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_cause: Option<String>,
}

impl BracketSource {
    /// A source of brackets started by the run's own process.
    pub fn new(event: NotifyEvent, count: u64, vms: u32, cause: &str, kernel_path: &str) -> Self {
        Self {
            event,
            count,
            vms,
            cause: cause.to_owned(),
            kernel_path: kernel_path.to_owned(),
            initiator_pid: None,
            context_cause: None,
            hook_cause: None,
        }
    }

    /// The `cause` labels of these brackets: from the task's context, and from a caller hook where one applies.
    pub fn with_causes(self, context: Cause, hook: Option<Cause>) -> Self {
        Self { context_cause: Some(context.label().to_owned()), hook_cause: hook.map(|c| c.label().to_owned()), ..self }
    }

    /// The same brackets, started by process `pid` instead.
    pub fn initiated_by(self, pid: u32) -> Self {
        Self { initiator_pid: Some(pid), ..self }
    }
}

impl InvalidationTruth {
    /// Derives the totals from the sources, so the two cannot disagree.
    pub fn from_sources(sources: Vec<BracketSource>) -> Self {
        let mut brackets = BTreeMap::new();
        let mut kvm_unmap_hva_range = 0;
        for s in &sources {
            *brackets.entry(s.event).or_insert(0) += s.count;
            kvm_unmap_hva_range += s.count * u64::from(s.vms);
        }
        Self { brackets, kvm_unmap_hva_range, sources }
    }

    /// Expected brackets by `cause` label (`hooks`: the caller hooks are attached), or `None` when a source does
    /// not say its cause. In tracepoint mode use [`Self::kvm_unmaps_by_cause`]: one event per VM per bracket.
    pub fn brackets_by_cause(&self, hooks: bool) -> Option<BTreeMap<String, u64>> {
        self.by_cause(hooks, |s| s.count)
    }

    /// Expected `kvm:kvm_unmap_hva_range` events by `cause` label as the context gives it (no caller hooks).
    pub fn kvm_unmaps_by_cause(&self) -> Option<BTreeMap<String, u64>> {
        self.by_cause(false, |s| s.count * u64::from(s.vms))
    }

    fn by_cause(&self, hooks: bool, n: impl Fn(&BracketSource) -> u64) -> Option<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for s in &self.sources {
            let cause =
                if hooks { s.hook_cause.as_ref().or(s.context_cause.as_ref()) } else { s.context_cause.as_ref() };
            *out.entry(cause?.clone()).or_insert(0) += n(s);
        }
        Some(out)
    }

    pub fn brackets_total(&self) -> u64 {
        self.brackets.values().sum()
    }

    /// Expected `kvm:kvm_unmap_hva_range` events per emitting pid (`owner_pid` for sources without an initiator).
    pub fn kvm_unmap_hva_range_by_pid(&self, owner_pid: u32) -> BTreeMap<u32, u64> {
        let mut out = BTreeMap::new();
        for s in &self.sources {
            *out.entry(s.initiator_pid.unwrap_or(owner_pid)).or_insert(0) += s.count * u64::from(s.vms);
        }
        out
    }
}

/// Why a truth document was refused.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("ground truth is not valid JSON for this schema: {0}")]
    Json(#[from] serde_json::Error),
    #[error("ground truth schema_version {found}, this build understands {SCHEMA_VERSION}")]
    Version { found: u32 },
    #[error("ground truth is inconsistent: {0}")]
    Inconsistent(String),
}

impl GroundTruth {
    /// The truth of a run of this process (`pid` = this process) with no optional parts.
    pub fn new(scenario: ScenarioParams, cgroups: CgroupPlacement, vms: u32, invalidations: InvalidationTruth) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            scenario,
            pid: std::process::id(),
            cgroups,
            vms,
            invalidations,
            kernel_api: None,
            double_notifications: None,
            secondary_tlb: None,
            fork: None,
            hugetlb_fork: None,
            swap: None,
            cross_cgroup: None,
            interval: None,
            tlb_subscriber: None,
            change_pte: None,
            subscribers: None,
        }
    }

    /// Parses and checks a workload's stdout.
    pub fn from_json(text: &str) -> Result<Self, TruthError> {
        let t: Self = serde_json::from_str(text)?;
        if t.schema_version != SCHEMA_VERSION {
            return Err(TruthError::Version { found: t.schema_version });
        }
        t.check()?;
        Ok(t)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("ground truth always serialises (string keys, no floats)")
    }

    /// Totals must equal what the sources add up to.
    pub fn check(&self) -> Result<(), TruthError> {
        let derived = InvalidationTruth::from_sources(self.invalidations.sources.clone());
        if derived != self.invalidations {
            return Err(TruthError::Inconsistent(format!(
                "totals {:?}/{} but sources add up to {:?}/{}",
                self.invalidations.brackets,
                self.invalidations.kvm_unmap_hva_range,
                derived.brackets,
                derived.kvm_unmap_hva_range
            )));
        }
        if let Some(s) = self.invalidations.sources.iter().find(|s| s.vms > self.vms) {
            return Err(TruthError::Inconsistent(format!("source {:?} has more VMs than the run", s.cause)));
        }
        if let Some(f) = &self.fork {
            check_fork(f)?;
        }
        if let Some(h) = &self.hugetlb_fork
            && (h.copied_huge_pages > h.huge_pages || h.copied_bytes != h.copied_huge_pages * h.huge_page_bytes)
        {
            return Err(TruthError::Inconsistent(format!(
                "hugetlb_fork: {} of {} huge pages of {} bytes copied, {} bytes",
                h.copied_huge_pages, h.huge_pages, h.huge_page_bytes, h.copied_bytes
            )));
        }
        if let Some(c) = &self.cross_cgroup {
            let initiated: u64 = self
                .invalidations
                .sources
                .iter()
                .filter(|s| s.initiator_pid == Some(c.initiator_pid))
                .map(|s| s.count)
                .sum();
            if initiated != c.invalidations {
                return Err(TruthError::Inconsistent(format!(
                    "cross_cgroup.invalidations {} but sources started by pid {} add up to {initiated}",
                    c.invalidations, c.initiator_pid
                )));
            }
        }
        if let Some(s) = &self.swap
            && s.swapped_pages > s.advised_pages
        {
            return Err(TruthError::Inconsistent(format!(
                "swap: {} pages swapped out of {} advised",
                s.swapped_pages, s.advised_pages
            )));
        }
        Ok(())
    }

    /// Expected `kvm:kvm_unmap_hva_range` events per emitting pid (see [`BracketSource::initiator_pid`]).
    pub fn expected_tracepoint_by_pid(&self) -> BTreeMap<u32, u64> {
        self.invalidations.kvm_unmap_hva_range_by_pid(self.pid)
    }

    /// What a tracepoint-mode agent must count per cgroup path: it attributes `kvm:kvm_unmap_hva_range` to the
    /// emitting task's cgroup, so brackets started from another cgroup (`cross_cgroup`) land there, not with the
    /// owner. Fails if a source names an initiator the truth does not place in a cgroup.
    pub fn expected_tracepoint_by_cgroup(&self) -> Result<BTreeMap<String, u64>, TruthError> {
        let mut out = BTreeMap::new();
        for s in &self.invalidations.sources {
            let path = match (s.initiator_pid, &self.cross_cgroup) {
                (None, _) => self.cgroups.attributed().path.as_str(),
                // A kernel thread initiator (no placement) is not in a cgroup the run knows.
                (Some(pid), Some(CrossCgroupTruth { initiator_pid, initiator_cgroups: Some(g), .. }))
                    if *initiator_pid == pid =>
                {
                    g.attributed().path.as_str()
                }
                (Some(pid), _) => {
                    return Err(TruthError::Inconsistent(format!("initiator pid {pid} has no cgroup in the truth")));
                }
            };
            *out.entry(path.to_owned()).or_insert(0) += s.count * u64::from(s.vms);
        }
        Ok(out)
    }

    /// What a tracepoint-mode agent must count for this run's cgroup: it sees KVM callbacks
    /// (`kvm:kvm_unmap_hva_range`), one per bracket per VM, without event types.
    pub fn expected_tracepoint_total(&self) -> u64 {
        self.invalidations.kvm_unmap_hva_range
    }
}

fn check_fork(f: &ForkTruth) -> Result<(), TruthError> {
    let bad = |what: String| Err(TruthError::Inconsistent(format!("fork: {what}")));
    if f.copied_pages > f.pages {
        return bad(format!("{} pages copied out of {}", f.copied_pages, f.pages));
    }
    if f.copied_pages > 0 && !f.copied_bytes.is_multiple_of(f.copied_pages) {
        return bad(format!("{} bytes is not a whole number of {} pages", f.copied_bytes, f.copied_pages));
    }
    if (f.copied_pages == 0) != (f.copied_bytes == 0) {
        return bad(format!("{} pages but {} bytes copied", f.copied_pages, f.copied_bytes));
    }
    if f.forks_with_pinned_pages != u64::from(f.copied_pages > 0) {
        return bad(format!(
            "forks_with_pinned_pages {} does not match {} copied pages",
            f.forks_with_pinned_pages, f.copied_pages
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
