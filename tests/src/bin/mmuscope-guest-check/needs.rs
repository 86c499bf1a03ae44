//! What a scenario needs from the agent under test: flags for `check` and `run`, `--agent-url` for workloads that
//! wait until the agent can see them, and the check of the interval callbacks such a wait is for.

use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::GroundTruth;

use crate::subscribers;

/// The scenarios that take `--agent-url` (they wait for the fork-copy hook after pinning).
const FORK_SCENARIOS: &[&str] = &["fork-pinned", "fork-pinned-thp", "fork-unpinned"];
/// The scenarios whose interval notifier is registered after the agent started, and its subscriber kind (the
/// callback's module): with `--agent-url` each waits until the agent times the notifier's `invalidate`
/// (`--probes.late-callbacks`, in [`SCENARIO_AGENT_FLAGS`]).
const LATE_CALLBACK_SCENARIOS: &[(&str, &str)] = &[("mirror-collide", "mmuscope_mirror"), ("rdma-odp", "rdma_rxe")];
/// Agent flags a scenario needs: the agent (one per mode) runs with those of every scenario of the run. The `ksm_cow`
/// family is off by default; with it, the other scenarios show that no copy of an ordinary page is named `ksm_cow`.
/// `--probes.late-callbacks`: the interval notifiers of [`LATE_CALLBACK_SCENARIOS`] appear after the agent started.
const SCENARIO_AGENT_FLAGS: &[(&str, &str)] = &[
    ("ksm-merge", "--probes.ksm-cow"),
    ("mirror-collide", "--probes.late-callbacks"),
    ("rdma-odp", "--probes.late-callbacks"),
];
/// The agent flags the scenario lines `scenarios` need ([`SCENARIO_AGENT_FLAGS`]), each once.
pub fn agent_flags(scenarios: &[String]) -> Vec<String> {
    let names: Vec<&str> = scenarios.iter().filter_map(|s| s.split_whitespace().next()).collect();
    let mut flags: Vec<String> = Vec::new();
    for (scenario, flag) in SCENARIO_AGENT_FLAGS {
        if names.contains(scenario) && !flags.iter().any(|f| f == flag) {
            flags.push((*flag).to_owned());
        }
    }
    flags
}

/// Whether scenario `name` takes `--agent-url`: the fork scenarios always; those of [`LATE_CALLBACK_SCENARIOS`] where
/// the callback timer works (fentry/kprobe modes, `bpf_get_func_ip`, which 5.15 added: before, nothing is timed and
/// nothing is waited for).
pub fn agent_url(name: &str, hooked: bool, old_helpers: bool) -> bool {
    FORK_SCENARIOS.contains(&name) || (hooked && !old_helpers && late_callback_kind(name).is_some())
}

/// The subscriber kind of a [`LATE_CALLBACK_SCENARIOS`] scenario.
fn late_callback_kind(name: &str) -> Option<&'static str> {
    LATE_CALLBACK_SCENARIOS.iter().find(|(n, _)| *n == name).map(|(_, kind)| *kind)
}

/// The interval callback a [`LATE_CALLBACK_SCENARIOS`] scenario registered after start-up: every `ops->invalidate`
/// call of the truth timed (none where the timer cannot work). Prints the comparison; the problem if it differs.
pub fn late_callback_problem(
    name: &str,
    truth: &GroundTruth,
    hooked: bool,
    old_helpers: bool,
    before: &Exposition,
    after: &Exposition,
) -> Option<String> {
    let kind = late_callback_kind(name).filter(|_| hooked)?;
    let interval = truth.interval.as_ref()?;
    let timed = |e| subscribers::callbacks_timed(e, kind, "invalidate");
    let got = timed(after).saturating_sub(timed(before));
    let want = if old_helpers { 0 } else { interval.invalidations };
    let series =
        format!("mmuscope_subscriber_callback_duration_seconds_count{{subscriber=\"{kind}\",callback=\"invalidate\"}}");
    println!("  {} {series}: expected {want}, observed {got}", if want == got { "ok  " } else { "FAIL" });
    (want != got).then(|| format!("{series}: expected {want}, observed {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_once_per_run_and_urls_where_the_timer_works() {
        let run = ["ksm-merge --pages 32", "mirror-collide --rounds 2", "rdma-odp --rounds 8", "kvm-madvise"];
        let flags = agent_flags(&run.map(String::from));
        assert_eq!(flags, ["--probes.ksm-cow", "--probes.late-callbacks"]);
        assert!(agent_url("fork-pinned", false, true), "fork scenarios always wait for the fork-copy hook");
        assert!(agent_url("mirror-collide", true, false));
        assert!(!agent_url("mirror-collide", true, true), "no bpf_get_func_ip: nothing to wait for");
        assert!(!agent_url("kvm-madvise", true, false));
    }
}
