//! `bpf_program_run_seconds_total{program}` and `bpf_program_runs_total{program}`: what our eBPF programs cost.

use prometheus::{
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::{families::counter, help::help};
use crate::bpfstats::{ProgramRun, ProgramStats};

/// A collector of its own, so reading program infos never delays or fails the map-based families.
pub struct ProgramStatsCollector {
    stats: ProgramStats,
    descs: Vec<Desc>,
}

const RUN_SECONDS: &str = "mmuscope_bpf_program_run_seconds_total";
const RUNS: &str = "mmuscope_bpf_program_runs_total";
/// The families this collector owns (the map-based collector leaves them out of its descriptors).
pub const FAMILY_NAMES: &[&str] = &[RUN_SECONDS, RUNS];

impl ProgramStatsCollector {
    pub fn new(stats: ProgramStats) -> Self {
        let descs = FAMILY_NAMES
            .iter()
            .filter_map(|n| {
                Desc::new(n.to_string(), help(n).to_string(), vec!["program".into()], Default::default()).ok()
            })
            .collect();
        Self { stats, descs }
    }
}

impl Collector for ProgramStatsCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.stats.read())
    }
}

pub fn families(runs: &[ProgramRun]) -> Vec<MetricFamily> {
    if runs.is_empty() {
        return Vec::new();
    }
    let rows = |f: fn(&ProgramRun) -> f64| runs.iter().map(move |r| (vec![("program", r.program.clone())], f(r)));
    vec![
        counter(RUN_SECONDS, help(RUN_SECONDS), rows(|r| r.run_time.as_secs_f64())),
        counter(RUNS, help(RUNS), rows(|r| r.run_count as f64)),
    ]
}
