//! Response bodies of the status and probe endpoints: a stable API shape, decoupled from the agent's internal types.

use serde::Serialize;
use utoipa::ToSchema;

use crate::probes::PlanReport;

#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    /// Agent version.
    pub version: String,
    /// `uname -r` of the host.
    pub kernel_release: String,
    /// Kernel generation for secondary-TLB invalidation (`invalidate_range` before 6.6,
    /// `arch_invalidate_secondary_tlbs` from 6.6, or `unknown`).
    pub generation: String,
    pub generation_description: String,
    /// Seconds since the agent started.
    pub uptime_seconds: f64,
    /// Start time, Unix seconds.
    pub started_at_unix_seconds: f64,
    /// Per probe family, what attached.
    pub families: Vec<FamilyStatus>,
    pub cgroups: CgroupsStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FamilyStatus {
    pub name: String,
    pub required: bool,
    /// The attached alternative (`fentry`, `kprobe`, `tp_btf`, `tracepoint`), null when nothing attached.
    pub attached: Option<String>,
    /// Its mode (`fentry`, `kprobe`, `tracepoint`), null when nothing attached.
    pub mode: Option<String>,
    /// What the attached alternative cannot report (empty for the best one).
    pub degraded: String,
    /// Why nothing attached, alternative by alternative (null when one did).
    pub not_attached_reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CgroupsStatus {
    /// Cgroups with their own series in `/metrics`.
    pub tracked: u64,
    /// Distinct cgroups aggregated into `cgroup="other"` so far.
    pub overflow_total: u64,
    /// `--max-cgroups` (null: no limit).
    pub max_cgroups: Option<u64>,
    /// `--cgroups.deleted-ttl` in seconds.
    pub deleted_ttl_seconds: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbesView {
    pub kernel_release: String,
    pub btf_path: String,
    pub generation_description: String,
    pub capabilities: CapabilitiesView,
    pub families: Vec<ProbeFamilyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapabilitiesView {
    /// fentry/fexit programs load on this kernel.
    pub trampolines: CapabilityView,
    pub kprobes: CapabilityView,
    pub tracefs: TracefsView,
}

/// Where classic tracepoints are attached from.
#[derive(Debug, Serialize, ToSchema)]
pub struct TracefsView {
    pub available: bool,
    /// The tracefs directory used, when available.
    pub path: Option<String>,
    /// The host had no tracefs mounted, so the agent mounted one in its own mount namespace.
    pub mounted_by_agent: bool,
    /// Why none is available, and the fix.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CapabilityView {
    pub available: bool,
    /// Why not, when unavailable.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProbeFamilyView {
    pub name: String,
    pub description: String,
    pub required: bool,
    /// In order of preference.
    pub alternatives: Vec<AlternativeView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AlternativeView {
    pub name: String,
    pub mode: String,
    /// `attached`, `unavailable`, `failed`, `not tried` or `excluded`.
    pub status: String,
    /// Why it is not attached (empty when attached).
    pub reason: String,
    pub targets: Vec<String>,
    pub degraded: String,
}

pub fn probes(r: &PlanReport) -> ProbesView {
    let cap = |c: &Result<(), String>| CapabilityView { available: c.is_ok(), reason: c.clone().err() };
    ProbesView {
        kernel_release: r.kernel_release.clone(),
        btf_path: r.btf_path.clone(),
        generation_description: r.generation_description.to_string(),
        capabilities: CapabilitiesView {
            trampolines: cap(&r.capabilities.trampolines),
            kprobes: cap(&r.capabilities.kprobes),
            tracefs: match &r.capabilities.tracefs {
                Ok(t) => TracefsView {
                    available: true,
                    path: Some(t.path().display().to_string()),
                    mounted_by_agent: matches!(t, crate::kernel::Tracefs::Private(_)),
                    reason: None,
                },
                Err(why) => {
                    TracefsView { available: false, path: None, mounted_by_agent: false, reason: Some(why.clone()) }
                }
            },
        },
        families: r
            .families
            .iter()
            .map(|f| ProbeFamilyView {
                name: f.name().to_string(),
                description: f.description.to_string(),
                required: f.required,
                alternatives: f
                    .alternatives
                    .iter()
                    .map(|a| AlternativeView {
                        name: a.name.to_string(),
                        mode: a.mode.as_str().to_string(),
                        status: a.status.as_str().to_string(),
                        reason: a.reason.clone(),
                        targets: a.targets.iter().map(|t| t.to_string()).collect(),
                        degraded: a.degraded.to_string(),
                    })
                    .collect(),
            })
            .collect(),
    }
}

pub fn families(r: &PlanReport) -> Vec<FamilyStatus> {
    r.families
        .iter()
        .map(|f| {
            let a = f.attached();
            FamilyStatus {
                name: f.name().to_string(),
                required: f.required,
                attached: a.map(|a| a.name.to_string()),
                mode: a.map(|a| a.mode.as_str().to_string()),
                degraded: a.map(|a| a.degraded.to_string()).unwrap_or_default(),
                not_attached_reason: f.why_not_attached(),
            }
        })
        .collect()
}
