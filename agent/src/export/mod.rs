//! The Prometheus side: a custom [`Collector`] that reads the kernel maps at scrape time and
//! turns them into `mmuscope_*` families (ebpf_exporter's model: no user-space counters).

mod families;
mod histogram;

use std::{collections::BTreeMap, sync::Mutex, time::Instant};

use mmuscope_abi::{BracketStats, Counter, HIST_BUCKETS, key_flags};
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{
    cgroups::{CgroupNames, Which},
    collect::{Maps, Snapshot},
    kernel::EventNames,
    probes::{PlanReport, Status},
};
use families::{HistogramRow, Labels, counter, gauge};

/// Static facts exported as `mmuscope_build_info`.
pub struct BuildInfo {
    pub version: &'static str,
    pub kernel: String,
    pub generation: &'static str,
}

pub struct Exporter {
    maps: Maps,
    cgroups: Mutex<CgroupNames>,
    events: EventNames,
    report: PlanReport,
    build: BuildInfo,
    descs: Vec<Desc>,
}

/// Family names and help texts; the descriptors and `docs/metrics.md` come from this list.
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "mmuscope_invalidations_total",
        "Completed mmu_notifier invalidation brackets, by owner memory cgroup, event type and whether the range was blockable. In tracepoint mode: kvm_unmap_hva_range events (one per VM per bracket), event and blockable unknown.",
    ),
    (
        "mmuscope_invalidation_duration_seconds",
        "Time from __mmu_notifier_invalidate_range_start entry to __mmu_notifier_invalidate_range_end return, by owner memory cgroup and event type (fentry and kprobe modes).",
    ),
    (
        "mmuscope_invalidation_start_failures_total",
        "invalidate_range_start calls that returned an error (non-blocking callers such as the OOM reaper); no end follows.",
    ),
    (
        "mmuscope_unmatched_bracket_ends_total",
        "Bracket ends whose start was not seen (agent attached mid-bracket, or in-flight table eviction).",
    ),
    ("mmuscope_probe_read_errors_total", "Kernel memory reads that failed while attributing an event to a cgroup."),
    ("mmuscope_map_update_errors_total", "Map updates that failed because the map was full, by map."),
    ("mmuscope_map_capacity", "max_entries of the aggregation maps, by map."),
    ("mmuscope_map_entries", "Entries currently in the aggregation maps, by map."),
    (
        "mmuscope_probe_attached",
        "1 if the probe family is attached with this alternative, 0 if the alternative is not in use.",
    ),
    ("mmuscope_build_info", "Build and kernel facts; value 1."),
    ("mmuscope_scrape_duration_seconds", "Time spent reading the kernel maps and building this scrape."),
];

impl Exporter {
    pub fn new(maps: Maps, cgroups: CgroupNames, events: EventNames, report: PlanReport, build: BuildInfo) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help)| Desc::new(name.to_string(), help.to_string(), vec![], Default::default()).ok())
            .collect();
        Self { maps, cgroups: Mutex::new(cgroups), events, report, build, descs }
    }

    fn help(name: &str) -> &'static str {
        FAMILIES.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h)
    }

    fn families(&self, snap: &Snapshot, started: Instant) -> Vec<MetricFamily> {
        let mut names = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        let which = |flags: u32| if flags & key_flags::DEFAULT_HIERARCHY != 0 { Which::Default } else { Which::Memory };
        names.resolve_all(
            snap.brackets
                .iter()
                .map(|(k, _)| (which(k.flags), k.cgroup_id))
                .chain(snap.kvm_unmaps.iter().map(|(k, _)| (which(k.flags), k.cgroup_id))),
        );

        // Aggregate by label set: several ids can share a label (e.g. "unknown").
        let mut counts: BTreeMap<(String, String, String), u64> = BTreeMap::new();
        let mut hists: BTreeMap<(String, String), BracketStats> = BTreeMap::new();
        for (k, s) in &snap.brackets {
            let cg = names.name(which(k.flags), k.cgroup_id).to_string();
            let ev = self.events.name(k.event.into()).to_string();
            let blockable = if k.flags & key_flags::BLOCKABLE != 0 { "true" } else { "false" };
            *counts.entry((cg.clone(), ev.clone(), blockable.into())).or_default() += s.count;
            let h = hists.entry((cg, ev)).or_default();
            h.count += s.count;
            h.sum_ns += s.sum_ns;
            for i in 0..HIST_BUCKETS {
                h.buckets[i] += s.buckets[i];
            }
        }
        for (k, n) in &snap.kvm_unmaps {
            let cg = names.name(which(k.flags), k.cgroup_id).to_string();
            *counts.entry((cg, "unknown".into(), "unknown".into())).or_default() += n;
        }
        drop(names);

        let c = |counter: Counter| snap.counters[counter as usize] as f64;
        let mut out = vec![
            counter(
                "mmuscope_invalidations_total",
                Self::help("mmuscope_invalidations_total"),
                counts
                    .into_iter()
                    .map(|((cg, ev, b), n)| (vec![("cgroup", cg), ("event", ev), ("blockable", b)], n as f64)),
            ),
            families::histogram(
                "mmuscope_invalidation_duration_seconds",
                Self::help("mmuscope_invalidation_duration_seconds"),
                hists.into_iter().map(|((cg, ev), s)| HistogramRow {
                    labels: vec![("cgroup", cg), ("event", ev)],
                    buckets: histogram::cumulative_seconds(&s),
                    sum: s.sum_ns as f64 / 1e9,
                    count: s.count,
                }),
            ),
            counter(
                "mmuscope_invalidation_start_failures_total",
                Self::help("mmuscope_invalidation_start_failures_total"),
                [(vec![], c(Counter::StartFailed))],
            ),
            counter(
                "mmuscope_unmatched_bracket_ends_total",
                Self::help("mmuscope_unmatched_bracket_ends_total"),
                [(vec![], c(Counter::EndWithoutStart))],
            ),
            counter(
                "mmuscope_probe_read_errors_total",
                Self::help("mmuscope_probe_read_errors_total"),
                [(vec![], c(Counter::ReadFault))],
            ),
            counter(
                "mmuscope_map_update_errors_total",
                Self::help("mmuscope_map_update_errors_total"),
                [
                    (vec![("map", "stats".into())], c(Counter::MapFull)),
                    (vec![("map", "inflight".into())], c(Counter::InflightFull)),
                ],
            ),
            gauge(
                "mmuscope_map_capacity",
                Self::help("mmuscope_map_capacity"),
                [("bracket_stats", self.maps.stats_capacity), ("kvm_unmap_counts", self.maps.stats_capacity)]
                    .map(|(m, n)| (vec![("map", m.to_string())], n as f64)),
            ),
            gauge(
                "mmuscope_map_entries",
                Self::help("mmuscope_map_entries"),
                [("bracket_stats", snap.brackets.len()), ("kvm_unmap_counts", snap.kvm_unmaps.len())]
                    .map(|(m, n)| (vec![("map", m.to_string())], n as f64)),
            ),
        ];
        out.push(self.probe_attached());
        out.push(gauge(
            "mmuscope_build_info",
            Self::help("mmuscope_build_info"),
            [(
                vec![
                    ("version", self.build.version.to_string()),
                    ("kernel", self.build.kernel.clone()),
                    ("generation", self.build.generation.to_string()),
                ],
                1.0,
            )],
        ));
        out.push(gauge(
            "mmuscope_scrape_duration_seconds",
            Self::help("mmuscope_scrape_duration_seconds"),
            [(vec![], started.elapsed().as_secs_f64())],
        ));
        out
    }

    fn probe_attached(&self) -> MetricFamily {
        let mut rows: Vec<(Labels, f64)> = Vec::new();
        for f in &self.report.families {
            for a in &f.alternatives {
                for target in &a.targets {
                    let labels = vec![
                        ("probe", f.name.to_string()),
                        ("mode", a.name.to_string()),
                        ("target", target.to_string()),
                    ];
                    rows.push((labels, if a.status == Status::Attached { 1.0 } else { 0.0 }));
                }
            }
        }
        gauge("mmuscope_probe_attached", Self::help("mmuscope_probe_attached"), rows)
    }
}

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let started = Instant::now();
        match self.maps.snapshot() {
            Ok(snap) => self.families(&snap, started),
            Err(e) => {
                tracing::error!("reading the kernel maps failed: {e:#}");
                vec![self.probe_attached()]
            }
        }
    }
}
