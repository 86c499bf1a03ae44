//! `bpf_program_run_seconds_total{program}` and `bpf_program_runs_total{program}`: what our eBPF programs cost.

use super::series::{Family, Kind, Metric, Value};
use crate::bpfstats::ProgramRun;

pub const RUN_SECONDS: Metric = Metric::plain(
    "mmuscope_bpf_program_run_seconds_total",
    Kind::Counter,
    &["program"],
    "Time the kernel spent running each of the agent's eBPF programs (only with --bpf.run-stats: BPF_ENABLE_STATS, \
     held for the agent's lifetime; needs CAP_SYS_ADMIN).",
);
pub const RUNS: Metric = Metric::plain(
    "mmuscope_bpf_program_runs_total",
    Kind::Counter,
    &["program"],
    "Runs of each of the agent's eBPF programs (only with --bpf.run-stats: BPF_ENABLE_STATS).",
);
pub const METRICS: &[&Metric] = &[&RUN_SECONDS, &RUNS];

/// Both families, left out when no program has statistics (`--bpf.run-stats` off).
pub fn families(runs: &[ProgramRun]) -> Vec<Family<'_>> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut seconds = Family::new(&RUN_SECONDS);
    let mut count = Family::new(&RUNS);
    for r in runs {
        seconds.add(None, &[&r.program], Value::Float(r.run_time.as_secs_f64()));
        count.add(None, &[&r.program], Value::Count(r.run_count));
    }
    vec![seconds, count]
}
