//! The agent's own health: probe plan, build facts, program error counters, map fill, scrape time.

use std::time::Instant;

use mmuscope_abi::Counter;

use super::series::{Family, Kind, Metric, Value};
use crate::{
    collect::Snapshot,
    probes::{PlanReport, Status},
};

pub const START_FAILURES: Metric = Metric::plain(
    "mmuscope_invalidation_start_failures_total",
    Kind::Counter,
    &[],
    "invalidate_range_start calls that returned an error (non-blocking callers such as the OOM reaper); no end follows.",
);
pub const UNMATCHED_ENDS: Metric = Metric::plain(
    "mmuscope_unmatched_bracket_ends_total",
    Kind::Counter,
    &[],
    "Bracket ends whose start was not seen (agent attached mid-bracket, or in-flight table eviction).",
);
pub const READ_FAULTS: Metric = Metric::plain(
    "mmuscope_probe_read_errors_total",
    Kind::Counter,
    &[],
    "Kernel memory reads that failed while attributing an event to a cgroup.",
);
pub const MAP_UPDATE_ERRORS: Metric = Metric::plain(
    "mmuscope_map_update_errors_total",
    Kind::Counter,
    &["map"],
    "Map updates that failed because the map was full, by map.",
);
pub const MAP_READ_ERRORS: Metric = Metric::plain(
    "mmuscope_map_read_errors_total",
    Kind::Counter,
    &["map"],
    "Reads of a kernel map that failed (the scrape or API request that needed it failed too), by map.",
);
pub const MAP_CAPACITY: Metric =
    Metric::plain("mmuscope_map_capacity", Kind::Gauge, &["map"], "max_entries of the aggregation maps, by map.");
pub const MAP_ENTRIES: Metric =
    Metric::plain("mmuscope_map_entries", Kind::Gauge, &["map"], "Entries currently in the aggregation maps, by map.");
pub const PROBE_ATTACHED: Metric = Metric::plain(
    "mmuscope_probe_attached",
    Kind::Gauge,
    &["probe", "mode", "target"],
    "1 if the probe family is attached with this alternative, 0 if the alternative is not in use. No series for a \
     family off by default whose flag is not given.",
);
pub const BUILD_INFO: Metric = Metric::plain(
    "mmuscope_build_info",
    Kind::Gauge,
    &["version", "revision", "kernel", "generation"],
    "Build and kernel facts; value 1.",
);
pub const CGROUPS_TRACKED: Metric = Metric::plain(
    "mmuscope_cgroups_tracked",
    Kind::Gauge,
    &[],
    "Cgroups that have their own series now (at most --max-cgroups; the rest are aggregated into cgroup=\"other\").",
);
pub const CGROUPS_OVERFLOW: Metric = Metric::plain(
    "mmuscope_cgroups_overflow_total",
    Kind::Counter,
    &[],
    "Distinct cgroups aggregated into cgroup=\"other\" because --max-cgroups was reached.",
);
pub const SCRAPE_DURATION: Metric = Metric::plain(
    "mmuscope_scrape_duration_seconds",
    Kind::Gauge,
    &[],
    "Time spent reading the kernel maps and building this scrape.",
);
pub const METRICS: &[&Metric] = &[
    &START_FAILURES,
    &UNMATCHED_ENDS,
    &READ_FAULTS,
    &MAP_UPDATE_ERRORS,
    &MAP_READ_ERRORS,
    &MAP_CAPACITY,
    &MAP_ENTRIES,
    &PROBE_ATTACHED,
    &BUILD_INFO,
    &CGROUPS_TRACKED,
    &CGROUPS_OVERFLOW,
    &SCRAPE_DURATION,
];

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
    let one = |metric: &'static Metric, c: Counter| Family::single(metric, Value::Count(counter(c)));
    let by_map = |metric: &'static Metric, rows: [(&'static str, u64); 3]| {
        let mut f = Family::new(metric);
        rows.into_iter().for_each(|(map, n)| f.add(None, &[map], Value::Count(n)));
        f
    };
    let cap = u64::from(stats_capacity);
    let mut build_info = Family::new(&BUILD_INFO);
    build_info.add(None, &[build.version, build.revision, &build.kernel, build.generation], Value::Count(1));
    vec![
        one(&START_FAILURES, Counter::StartFailed),
        one(&UNMATCHED_ENDS, Counter::EndWithoutStart),
        one(&READ_FAULTS, Counter::ReadFault),
        by_map(
            &MAP_UPDATE_ERRORS,
            [
                ("stats", counter(Counter::MapFull)),
                ("inflight", counter(Counter::InflightFull)),
                ("slow_events", counter(Counter::SlowDropped)),
            ],
        ),
        by_map(&MAP_CAPACITY, [("bracket_stats", cap), ("kvm_unmap_counts", cap), ("fork_stats", cap)]),
        by_map(
            &MAP_ENTRIES,
            [
                ("bracket_stats", snap.brackets.len() as u64),
                ("kvm_unmap_counts", snap.kvm_unmaps.len() as u64),
                ("fork_stats", snap.forks.len() as u64),
            ],
        ),
        probe_attached(report),
        build_info,
        Family::single(&SCRAPE_DURATION, Value::Float(started.elapsed().as_secs_f64())),
    ]
}

/// `cgroups_tracked` (cgroups with their own series) and `cgroups_overflow_total` (cgroups folded into
/// `cgroup="other"` by `--max-cgroups`).
pub fn cgroup_families(names: &crate::cgroups::CgroupNames) -> Vec<Family<'static>> {
    vec![
        Family::single(&CGROUPS_TRACKED, Value::Count(names.tracked() as u64)),
        Family::single(&CGROUPS_OVERFLOW, Value::Count(names.overflow_total())),
    ]
}

/// `map_read_errors_total{map}`: failed reads of each kernel map, by scrapes and API requests alike.
pub fn map_read_errors(rows: &[(&'static str, u64)]) -> Family<'static> {
    let mut f = Family::new(&MAP_READ_ERRORS);
    rows.iter().for_each(|(map, n)| f.add(None, &[map], Value::Count(*n)));
    f
}

/// `probe_attached{probe, mode, target}`: 1 for the attached alternative's targets, 0 for the rest.
pub fn probe_attached(report: &PlanReport) -> Family<'static> {
    let mut f = Family::new(&PROBE_ATTACHED);
    // Off by choice (a family off by default without its flag) is not a missing probe: no series, no alert.
    for family in report.families.iter().filter(|f| !f.switched_off()) {
        for a in family.alternatives.iter().filter(|a| a.status != Status::Off) {
            for target in &a.targets {
                let attached = u64::from(a.status == Status::Attached);
                f.add(None, &[family.name(), a.name, target], Value::Count(attached));
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{
        Mode,
        report::{AlternativeReport, FamilyReport},
    };

    fn family(name: &'static str, statuses: &[(Mode, Status)]) -> FamilyReport {
        let alternatives = statuses
            .iter()
            .map(|&(mode, status)| AlternativeReport {
                name: mode.as_str(),
                mode,
                status,
                reason: String::new(),
                targets: vec!["f"],
                hooks: vec![],
                degraded: "",
            })
            .collect();
        FamilyReport { id: crate::probes::FamilyId::new(name), description: "", required: false, alternatives }
    }

    /// A family off by choice (an opt-in family without its flag) has no series; one that could not attach has 0.
    #[test]
    fn a_family_switched_off_has_no_probe_attached_series() {
        let mut report = super::super::reference::sample_report();
        report.families = vec![
            family("a", &[(Mode::Fentry, Status::Attached), (Mode::Kprobe, Status::NotTried)]),
            family("b", &[(Mode::Fentry, Status::Unavailable), (Mode::Kprobe, Status::Unavailable)]),
            family("c", &[(Mode::Fentry, Status::Off), (Mode::Kprobe, Status::Off)]),
            // Off in kprobe mode unless --probes.keep-attached, the fentry alternative excluded by --mode.
            family("d", &[(Mode::Fentry, Status::Excluded), (Mode::Kprobe, Status::Off)]),
            // Attached with a fallback where its preferred alternative is off.
            family("e", &[(Mode::Fentry, Status::Off), (Mode::Tracepoint, Status::Attached)]),
        ];
        assert!(report.families[2].switched_off() && !report.families[1].switched_off());
        assert!(report.families[3].switched_off() && !report.families[4].switched_off());
        assert!(report.degraded().is_empty(), "an off family is not one running on a fallback");
        let mut f = probe_attached(&report);
        assert_eq!(f.value(None, &["a", "fentry", "f"]), Some(&Value::Count(1)));
        assert_eq!(f.value(None, &["b", "kprobe", "f"]), Some(&Value::Count(0)));
        let probes: Vec<String> = f.series().map(|s| s.own[0].to_string()).collect();
        assert!(!probes.iter().any(|p| p == "c" || p == "d"), "{probes:?}");
        assert_eq!(f.value(None, &["e", "tracepoint", "f"]), Some(&Value::Count(1)));
        assert_eq!(f.value(None, &["e", "fentry", "f"]), None, "an alternative off has no series");
    }
}
