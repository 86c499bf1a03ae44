//! The agent's own health: probe plan, build facts, program error counters, map fill, scrape time.

use std::time::Instant;

use mmuscope_abi::Counter;
use prometheus::proto::MetricFamily;

use super::{
    families::{Labels, counter, gauge},
    help::help,
};
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

pub fn families(
    snap: &Snapshot,
    stats_capacity: u32,
    report: &PlanReport,
    build: &BuildInfo,
    started: Instant,
) -> Vec<MetricFamily> {
    let c = |counter: Counter| snap.counters[counter as usize] as f64;
    let one = |name: &'static str, v: f64| counter(name, help(name), [(vec![], v)]);
    let by_map =
        |rows: &[(&str, f64)]| rows.iter().map(|(m, v)| (vec![("map", m.to_string())], *v)).collect::<Vec<_>>();
    let cap = stats_capacity as f64;
    vec![
        one("mmuscope_invalidation_start_failures_total", c(Counter::StartFailed)),
        one("mmuscope_unmatched_bracket_ends_total", c(Counter::EndWithoutStart)),
        one("mmuscope_probe_read_errors_total", c(Counter::ReadFault)),
        counter(
            "mmuscope_map_update_errors_total",
            help("mmuscope_map_update_errors_total"),
            by_map(&[
                ("stats", c(Counter::MapFull)),
                ("inflight", c(Counter::InflightFull)),
                ("slow_events", c(Counter::SlowDropped)),
            ]),
        ),
        gauge(
            "mmuscope_map_capacity",
            help("mmuscope_map_capacity"),
            by_map(&[("bracket_stats", cap), ("kvm_unmap_counts", cap), ("fork_stats", cap)]),
        ),
        gauge(
            "mmuscope_map_entries",
            help("mmuscope_map_entries"),
            by_map(&[
                ("bracket_stats", snap.brackets.len() as f64),
                ("kvm_unmap_counts", snap.kvm_unmaps.len() as f64),
                ("fork_stats", snap.forks.len() as f64),
            ]),
        ),
        probe_attached(report),
        gauge(
            "mmuscope_build_info",
            help("mmuscope_build_info"),
            [(
                vec![
                    ("version", build.version.to_string()),
                    ("revision", build.revision.to_string()),
                    ("kernel", build.kernel.clone()),
                    ("generation", build.generation.to_string()),
                ],
                1.0,
            )],
        ),
        gauge(
            "mmuscope_scrape_duration_seconds",
            help("mmuscope_scrape_duration_seconds"),
            [(vec![], started.elapsed().as_secs_f64())],
        ),
    ]
}

/// `cgroups_tracked` (cgroups with their own series) and `cgroups_overflow_total` (cgroups folded into
/// `cgroup="other"` by `--max-cgroups`).
pub fn cgroup_families(names: &crate::cgroups::CgroupNames) -> Vec<MetricFamily> {
    vec![
        gauge("mmuscope_cgroups_tracked", help("mmuscope_cgroups_tracked"), [(vec![], names.tracked() as f64)]),
        counter(
            "mmuscope_cgroups_overflow_total",
            help("mmuscope_cgroups_overflow_total"),
            [(vec![], names.overflow_total() as f64)],
        ),
    ]
}

/// `map_read_errors_total{map}`: failed reads of each kernel map, by scrapes and API requests alike.
pub fn map_read_errors(rows: &[(&str, u64)]) -> MetricFamily {
    let rows = rows.iter().map(|(m, n)| (vec![("map", m.to_string())], *n as f64)).collect::<Vec<_>>();
    counter("mmuscope_map_read_errors_total", help("mmuscope_map_read_errors_total"), rows)
}

/// `probe_attached{probe, mode, target}`: 1 for the attached alternative's targets, 0 for the rest.
pub fn probe_attached(report: &PlanReport) -> MetricFamily {
    let mut rows: Vec<(Labels, f64)> = Vec::new();
    for f in &report.families {
        for a in &f.alternatives {
            for target in &a.targets {
                let labels =
                    vec![("probe", f.name.to_string()), ("mode", a.name.to_string()), ("target", target.to_string())];
                rows.push((labels, if a.status == Status::Attached { 1.0 } else { 0.0 }));
            }
        }
    }
    gauge("mmuscope_probe_attached", help("mmuscope_probe_attached"), rows)
}
