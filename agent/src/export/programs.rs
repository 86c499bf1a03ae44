//! `bpf_program_run_seconds_total{program}` and `bpf_program_runs_total{program}`: what our eBPF programs cost;
//! `bpf_program_recursion_misses_total{program}`: the runs the kernel skipped (events not counted).

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
pub const RECURSION_MISSES: Metric = Metric::plain(
    "mmuscope_bpf_program_recursion_misses_total",
    Kind::Counter,
    &["program"],
    "Runs of each of the agent's eBPF programs the kernel skipped because it was already running on that CPU: \
     events not counted. Series only for programs that missed one; 0 before Linux 5.12.",
);
pub const METRICS: &[&Metric] = &[&RUN_SECONDS, &RUNS, &RECURSION_MISSES];

/// The run statistics (left out unless `run_stats`: `--bpf.run-stats`), and the recursion misses of the programs
/// that have any.
pub fn families(runs: &[ProgramRun], run_stats: bool) -> Vec<Family<'_>> {
    let mut families = Vec::new();
    if run_stats && !runs.is_empty() {
        let mut seconds = Family::new(&RUN_SECONDS);
        let mut count = Family::new(&RUNS);
        for r in runs {
            seconds.add(None, &[&r.program], Value::Float(r.run_time.as_secs_f64()));
            count.add(None, &[&r.program], Value::Count(r.run_count));
        }
        families.extend([seconds, count]);
    }
    let mut misses = Family::new(&RECURSION_MISSES);
    for r in runs.iter().filter(|r| r.recursion_misses > 0) {
        misses.add(None, &[&r.program], Value::Count(r.recursion_misses));
    }
    families.push(misses);
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_always_exported_and_run_statistics_only_when_asked() {
        let run = |program: &str, misses| ProgramRun {
            program: program.into(),
            run_time: std::time::Duration::from_nanos(5),
            run_count: 7,
            recursion_misses: misses,
        };
        let runs = [run("bracket_start_fentry", 3), run("bracket_end_fexit", 0)];
        let names = |f: &[Family<'_>]| f.iter().map(|f| f.name).collect::<Vec<_>>();
        let mut off = families(&runs, false);
        assert_eq!(names(&off), [RECURSION_MISSES.name]);
        assert_eq!(off[0].series().len(), 1, "only the program that missed has a series");
        assert_eq!(names(&families(&runs, true)), [RUN_SECONDS.name, RUNS.name, RECURSION_MISSES.name]);
    }
}
