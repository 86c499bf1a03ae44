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
}

/// The scenario and its parameters, one variant per scenario (names as on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scenario", content = "params", rename_all = "kebab-case")]
pub enum ScenarioParams {
    KvmMadvise(KvmMadviseParams),
}

impl ScenarioParams {
    pub fn name(&self) -> &'static str {
        match self {
            Self::KvmMadvise(_) => "kvm-madvise",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmMadviseParams {
    pub iterations: u64,
    /// Size of the guest-memory region (one memslot).
    pub region_bytes: u64,
    pub page_bytes: u64,
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

/// Invalidations of this process's mm, counted only while at least one KVM notifier was registered on it (outside
/// that window no subscriber sees them, so no probe does either).
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

    pub fn brackets_total(&self) -> u64 {
        self.brackets.values().sum()
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
        Ok(())
    }

    /// What a tracepoint-mode agent must count for this run's cgroup: it sees KVM callbacks
    /// (`kvm:kvm_unmap_hva_range`), one per bracket per VM, without event types.
    pub fn expected_tracepoint_total(&self) -> u64 {
        self.invalidations.kvm_unmap_hva_range
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::cgroup::{CgroupPath, CgroupRef, HierarchyKind};

    fn sample() -> GroundTruth {
        let cg = |id, root: &str| CgroupRef {
            path: CgroupPath::parse("/mmuscope-test/kvm-madvise-42").unwrap(),
            id,
            dir: PathBuf::from(root).join("mmuscope-test/kvm-madvise-42"),
        };
        GroundTruth {
            schema_version: SCHEMA_VERSION,
            scenario: ScenarioParams::KvmMadvise(KvmMadviseParams {
                iterations: 3,
                region_bytes: 2 << 20,
                page_bytes: 4096,
            }),
            pid: 42,
            cgroups: CgroupPlacement {
                default: cg(100, "/sys/fs/cgroup/unified"),
                memory_v1: Some(cg(200, "/sys/fs/cgroup/memory")),
                attribution: HierarchyKind::MemoryV1,
            },
            vms: 2,
            invalidations: InvalidationTruth::from_sources(vec![
                BracketSource {
                    event: NotifyEvent::Clear,
                    count: 3,
                    vms: 2,
                    cause: "madvise".into(),
                    kernel_path: "zap".into(),
                },
                BracketSource {
                    event: NotifyEvent::Unmap,
                    count: 1,
                    vms: 1,
                    cause: "munmap".into(),
                    kernel_path: "unmap_vmas".into(),
                },
            ]),
        }
    }

    #[test]
    fn round_trip() {
        let t = sample();
        let json = t.to_json();
        assert_eq!(GroundTruth::from_json(&json).unwrap(), t);
    }

    #[test]
    fn wire_names() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["scenario"], "kvm-madvise");
        assert_eq!(v["params"]["iterations"], 3);
        assert_eq!(v["cgroups"]["attribution"], "memory_v1");
        assert_eq!(v["cgroups"]["memory_v1"]["path"], "/mmuscope-test/kvm-madvise-42");
        assert_eq!(v["invalidations"]["brackets"]["clear"], 3);
        assert_eq!(v["invalidations"]["brackets"]["unmap"], 1);
        assert_eq!(v["invalidations"]["kvm_unmap_hva_range"], 7);
        let names: Vec<_> = [NotifyEvent::ProtectionVma, NotifyEvent::SoftDirty]
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(names, ["\"protection_vma\"", "\"soft_dirty\""]);
    }

    #[test]
    fn totals_and_expectation() {
        let t = sample();
        assert_eq!(t.invalidations.brackets_total(), 4);
        assert_eq!(t.expected_tracepoint_total(), 3 * 2 + 1);
        assert_eq!(t.cgroups.attributed().id, 200);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["fork_pinned"] = serde_json::json!({ "copies": 5 });
        assert_eq!(GroundTruth::from_json(&v.to_string()).unwrap(), sample());
    }

    #[test]
    fn rejects_wrong_version_and_inconsistent_totals() {
        let mut t = sample();
        t.schema_version = 99;
        assert!(matches!(GroundTruth::from_json(&t.to_json()), Err(TruthError::Version { found: 99 })));
        let mut t = sample();
        t.invalidations.kvm_unmap_hva_range += 1;
        assert!(matches!(GroundTruth::from_json(&t.to_json()), Err(TruthError::Inconsistent(_))));
        let mut v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        v["cgroups"]["default"]["path"] = "/a/../b".into();
        assert!(matches!(GroundTruth::from_json(&v.to_string()), Err(TruthError::Json(_))));
    }
}
