//! `bpf_program_run_seconds_total{program}` and `bpf_program_runs_total{program}`: what our eBPF programs cost.

use super::series::{Family, Kind, Value};
use crate::bpfstats::ProgramRun;

const RUN_SECONDS: &str = "mmuscope_bpf_program_run_seconds_total";
const RUNS: &str = "mmuscope_bpf_program_runs_total";

/// Both families, left out when no program has statistics (`--bpf.run-stats` off).
pub fn families(runs: &[ProgramRun]) -> Vec<Family<'_>> {
    if runs.is_empty() {
        return Vec::new();
    }
    let mut seconds = Family::plain(RUN_SECONDS, Kind::Counter, &["program"]);
    let mut count = Family::plain(RUNS, Kind::Counter, &["program"]);
    for r in runs {
        seconds.add(None, &[&r.program], Value::Float(r.run_time.as_secs_f64()));
        count.add(None, &[&r.program], Value::Count(r.run_count));
    }
    vec![seconds, count]
}
