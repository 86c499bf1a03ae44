//! The Prometheus side: a custom [`Collector`] that reads the kernel maps at scrape time and
//! turns them into `mmuscope_*` families (ebpf_exporter's model: no user-space counters).
//!
//! One file per group of families: [`brackets`] (invalidation counts and latency), [`agent`]
//! (the agent's own health). [`help`] lists every family once; `docs/metrics.md` is made from it.

mod agent;
mod brackets;
mod families;
mod help;
mod histogram;

use std::{sync::Mutex, time::Instant};

use mmuscope_abi::key_flags;
use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

pub use agent::BuildInfo;
pub use help::FAMILIES;

use crate::{
    cgroups::{CgroupNames, Which},
    collect::Maps,
    kernel::EventNames,
    probes::PlanReport,
};

/// Label pairs of one series.
pub use families::Labels;

pub struct Exporter {
    maps: Maps,
    cgroups: Mutex<CgroupNames>,
    events: EventNames,
    report: PlanReport,
    build: BuildInfo,
    descs: Vec<Desc>,
}

/// Which hierarchy a key's cgroup id belongs to, from its flags.
pub fn hierarchy_of(flags: u32) -> Which {
    if flags & key_flags::DEFAULT_HIERARCHY != 0 { Which::Default } else { Which::Memory }
}

impl Exporter {
    pub fn new(maps: Maps, cgroups: CgroupNames, events: EventNames, report: PlanReport, build: BuildInfo) -> Self {
        let descs = FAMILIES
            .iter()
            .filter_map(|(name, help)| Desc::new(name.to_string(), help.to_string(), vec![], Default::default()).ok())
            .collect();
        Self { maps, cgroups: Mutex::new(cgroups), events, report, build, descs }
    }
}

impl Collector for Exporter {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let started = Instant::now();
        let snap = match self.maps.snapshot() {
            Ok(snap) => snap,
            Err(e) => {
                // Fail only what depends on the maps; the plan is still worth exporting.
                tracing::error!("reading the kernel maps failed: {e:#}");
                return vec![agent::probe_attached(&self.report)];
            }
        };
        let mut names = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        names.resolve_all(snap.cgroup_ids().map(|(flags, id)| (hierarchy_of(flags), id)));
        let cgroup =
            |flags: u32, id: u64| -> Labels { vec![("cgroup", names.name(hierarchy_of(flags), id).to_string())] };
        let mut out = brackets::families(&snap, &cgroup, &self.events);
        drop(names);
        out.extend(agent::families(&snap, &self.maps, &self.report, &self.build, started));
        out
    }
}
