//! The agent's own health: probe plan, build facts, program error counters, map fill, scrape time.

use std::time::Instant;

use mmuscope_abi::Counter;

use super::series::{Family, Kind, Value};
use crate::{
    collect::Snapshot,
    probes::{PlanReport, Status},
};

/// Static facts exported as `mmuscope_build_info`.
pub struct BuildInfo {
    pub version: &'static str,
    /// The git revision the agent was built from (`unknown` outside a checkout).
    pub revision: &'static str,
    pub kernel: String,
    pub generation: &'static str,
}

pub fn families<'a>(
    snap: &Snapshot,
    stats_capacity: u32,
    report: &'a PlanReport,
    build: &'a BuildInfo,
    started: Instant,
) -> Vec<Family<'a>> {
    let counter = |c: Counter| snap.counters[c as usize];
    let one = |name: &'static str, c: Counter| Family::single(name, Kind::Counter, Value::Count(counter(c)));
    let by_map = |name: &'static str, kind: Kind, rows: [(&'static str, u64); 3]| {
        let mut f = Family::plain(name, kind, &["map"]);
        rows.into_iter().for_each(|(map, n)| f.add(None, &[map], Value::Count(n)));
        f
    };
    let cap = u64::from(stats_capacity);
    let mut build_info =
        Family::plain("mmuscope_build_info", Kind::Gauge, &["version", "revision", "kernel", "generation"]);
    build_info.add(None, &[build.version, build.revision, &build.kernel, build.generation], Value::Count(1));
    vec![
        one("mmuscope_invalidation_start_failures_total", Counter::StartFailed),
        one("mmuscope_unmatched_bracket_ends_total", Counter::EndWithoutStart),
        one("mmuscope_probe_read_errors_total", Counter::ReadFault),
        by_map(
            "mmuscope_map_update_errors_total",
            Kind::Counter,
            [
                ("stats", counter(Counter::MapFull)),
                ("inflight", counter(Counter::InflightFull)),
                ("slow_events", counter(Counter::SlowDropped)),
            ],
        ),
        by_map(
            "mmuscope_map_capacity",
            Kind::Gauge,
            [("bracket_stats", cap), ("kvm_unmap_counts", cap), ("fork_stats", cap)],
        ),
        by_map(
            "mmuscope_map_entries",
            Kind::Gauge,
            [
                ("bracket_stats", snap.brackets.len() as u64),
                ("kvm_unmap_counts", snap.kvm_unmaps.len() as u64),
                ("fork_stats", snap.forks.len() as u64),
            ],
        ),
        probe_attached(report),
        build_info,
        Family::single("mmuscope_scrape_duration_seconds", Kind::Gauge, Value::Float(started.elapsed().as_secs_f64())),
    ]
}

/// `cgroups_tracked` (cgroups with their own series) and `cgroups_overflow_total` (cgroups folded into
/// `cgroup="other"` by `--max-cgroups`).
pub fn cgroup_families(names: &crate::cgroups::CgroupNames) -> Vec<Family<'static>> {
    vec![
        Family::single("mmuscope_cgroups_tracked", Kind::Gauge, Value::Count(names.tracked() as u64)),
        Family::single("mmuscope_cgroups_overflow_total", Kind::Counter, Value::Count(names.overflow_total())),
    ]
}

/// `map_read_errors_total{map}`: failed reads of each kernel map, by scrapes and API requests alike.
pub fn map_read_errors(rows: &[(&'static str, u64)]) -> Family<'static> {
    let mut f = Family::plain("mmuscope_map_read_errors_total", Kind::Counter, &["map"]);
    rows.iter().for_each(|(map, n)| f.add(None, &[map], Value::Count(*n)));
    f
}

/// `probe_attached{probe, mode, target}`: 1 for the attached alternative's targets, 0 for the rest.
pub fn probe_attached(report: &PlanReport) -> Family<'static> {
    let mut f = Family::plain("mmuscope_probe_attached", Kind::Gauge, &["probe", "mode", "target"]);
    for family in &report.families {
        for a in &family.alternatives {
            for target in &a.targets {
                let attached = u64::from(a.status == Status::Attached);
                f.add(None, &[family.name, a.name, target], Value::Count(attached));
            }
        }
    }
    f
}
