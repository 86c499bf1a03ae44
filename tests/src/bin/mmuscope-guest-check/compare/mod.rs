//! Step 3: one workload scenario against the running agent. Scrape, run the workload, derive every expected
//! increase from its ground truth (`families`), scrape until all are reached (or a timeout), wait a quiet period,
//! scrape once more, and compare the increases exactly, one [`Comparison`] per series group ([`increases`]), and the
//! kernel's own references with both ([`references`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mmuscope_tests::cgroup::{self, Hierarchies};
use mmuscope_tests::harness::held::HeldWorkload;
use mmuscope_tests::harness::run_workload;
use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::{GroundTruth, SecondaryTlbApi};

use crate::families::{self, Check, Closed, Expectations};
use crate::record::{Comparison, EventCounts, Record};
use crate::subscribers::{self, Listed};
use crate::{agent, needs, reference, slow, stacks};

mod increases;
mod references;

use increases::{by_cgroup_event, expected, increase, matches, within};
use references::{reference_problems, trace_problems};

const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Scenarios whose workload is held while the inventory is checked (fentry and kprobe modes): `kvm-madvise` (one
/// `kvm` subscription per VM) and `fork-pinned` (no subscription, the has-pinned flag; listed through the sweeps'
/// maximum age, as pinning opens no change generation).
const INVENTORY_SCENARIOS: &[&str] = &["kvm-madvise", "fork-pinned"];
/// The family that names a KSM page's copy `ksm_cow` (the truth's hook cause for it) where it is attached.
const KSM_COW_FAMILY: &str = "ksm_cow";
/// After the expected totals appear, wait this long and scrape again to catch late extra events.
const QUIET_PERIOD: Duration = Duration::from_secs(1);

/// Whether the agent reports probe family `family` attached (`mmuscope_probe_attached{probe}` = 1 for some target).
fn attached(metrics: &Exposition, family: &str) -> bool {
    metrics
        .samples_named("mmuscope_probe_attached")
        .any(|s| s.labels.get("probe").is_some_and(|p| p == family) && s.value == 1.0)
}

pub fn scenario(
    agent: &agent::Agent,
    workload: &Path,
    line: &str,
    mode: &str,
    kernel: &str,
    api: SecondaryTlbApi,
    old_helpers: bool,
) -> Record {
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let name = args.first().cloned().unwrap_or_default();
    let started = Instant::now();
    // Subscribers are checked in the modes that time callbacks, on the scenarios of INVENTORY_SCENARIOS.
    let hooked = mode == "fentry" || mode == "kprobe";
    let inventory = hooked && INVENTORY_SCENARIOS.contains(&name.as_str());
    // The agent attaches the fork-copy hook once it has seen a pin; these workloads wait for it before forking.
    let mut run_args = args.clone();
    // The callback timer needs `bpf_get_func_ip` (5.15): before, nothing is timed and nothing is waited for.
    if needs::agent_url(&name, hooked, old_helpers) {
        run_args.extend(["--agent-url".to_owned(), agent.scraper.base().to_owned()]);
    }
    // The agent attaches its subscription hooks (operation boundaries, TLB-gather and cause windows) only while some
    // mm has subscriptions: every workload waits for them after registering its notifier.
    if hooked {
        run_args.extend(["--await-hooks".to_owned(), agent.scraper.base().to_owned()]);
    }
    match run(agent, workload, &run_args, api, mode, inventory, old_helpers) {
        Ok(outcome) => outcome.into_record(kernel, mode, &name, args, started.elapsed().as_secs_f64()),
        Err(e) => Record::error(
            kernel,
            mode,
            &format!("scenario {line}"),
            format!("{e:#}\nagent log tail:\n{}", agent.tail()),
        ),
    }
}

struct Outcome {
    cgroup: String,
    kernel_api: String,
    comparisons: Vec<Comparison>,
    notes: Vec<String>,
    unasserted: Vec<String>,
    problems: Vec<String>,
    other_cgroups: BTreeMap<String, EventCounts>,
    /// KVM start callbacks: the truth's count and the histogram's increase (fentry/kprobe modes).
    callbacks: Option<(u64, u64)>,
    /// The held workload's inventory entry, when checked.
    subscribers: Option<Listed>,
}

fn run(
    agent: &agent::Agent,
    workload: &Path,
    args: &[String],
    api: SecondaryTlbApi,
    mode: &str,
    check_inventory: bool,
    old_helpers: bool,
) -> Result<Outcome> {
    let hooked = mode == "fentry" || mode == "kprobe";
    let mut problems = Vec::new();
    let reference = reference::KprobeCounter::arm(reference::kvm_callbacks(api))
        .map_err(|e| problems.push(format!("the kprobe reference could not be armed: {e:#}")))
        .ok();
    let trace = reference::Layout::running()
        .and_then(|layout| reference::BracketTrace::arm(layout, api))
        .map_err(|e| problems.push(format!("the trace reference could not be armed: {e:#}")))
        .ok();
    let misses_before = agent.recursion_misses();
    let before = agent.scraper.metrics().context("scrape before the workload")?;
    // Stacks are checked where brackets are hooked, during the scenarios that hold (their work ends at the hold).
    let capture = (hooked && check_inventory)
        .then(|| stacks::Capture::start(&agent.scraper, args.first().map_or("", String::as_str)))
        .flatten();
    // The subscription hooks follow the inventory (`probes::arming`): checked around the held KVM VM.
    let arming = check_inventory && args.first().is_some_and(|n| n == "kvm-madvise");
    let hooks_before = arming.then(|| subscribers::subscription_hooks(&agent.scraper, false)).transpose()?;
    let (truth, listed) = if check_inventory {
        let held =
            HeldWorkload::spawn(workload, args.iter().map(String::as_str).chain(["--hold"]), SETTLE_TIMEOUT * 3)?;
        let hooks_held = arming.then(|| subscribers::subscription_hooks(&agent.scraper, true)).transpose();
        if let Some(Err(e)) = capture.as_ref().map(stacks::Capture::work_done) {
            problems.push(format!("/api/v1/stacks: {e:#}"));
        }
        let listed = subscribers::listed(&agent.scraper, held.pid());
        // The gauges of the same (already taken) inventory, while the workload still holds.
        let gauges = agent.scraper.metrics();
        let truth = held.release()?;
        let listed = listed?;
        if let (Some(before), Some(held)) = (&hooks_before, hooks_held?) {
            let after = subscribers::subscription_hooks(&agent.scraper, false)?;
            problems.extend(subscribers::arming_problems(before, &held, &after));
        }
        match reference::Layout::running() {
            Ok(layout) => problems.extend(subscribers::inventory_problems(&listed, &truth, api, layout.ops_change_pte)),
            Err(e) => problems.push(format!("the inventory's change_pte slot: BTF unreadable: {e:#}")),
        }
        match gauges {
            Ok(e) => problems.extend(subscribers::truncation_problems(&e, &truth, api)),
            Err(e) => problems.push(format!("scrape while the workload held: {e:#}")),
        }
        (truth, listed)
    } else {
        (run_workload(workload, args)?, None)
    };
    // The labels the agent can give: without `bpf_task_pt_regs` it cannot read a bracket's system call (`mmuscope
    // check`: "causes caller hooks only"), so a bracket no caller hook names is `unknown`. The stacks still pass
    // through the system call: they are checked against `truth` itself.
    let mut labelled = truth.clone();
    // A hook cause of an opt-in family holds only where the agent attached it; elsewhere those brackets keep their
    // context's cause, and the record says so.
    let mut unhooked = Vec::new();
    if !attached(&before, KSM_COW_FAMILY) {
        for s in &mut labelled.invalidations.sources {
            if s.hook_cause.as_deref() == Some("ksm_cow") {
                s.hook_cause = None;
                unhooked.push(format!(
                    "{} brackets ({}): the agent has no {KSM_COW_FAMILY} family attached (`mmuscope check`: off \
                     without --probes.ksm-cow, or no hook), so their cause is the context's, {}",
                    s.count,
                    s.cause,
                    s.context_cause.as_deref().unwrap_or("unknown")
                ));
            }
        }
    }
    if old_helpers {
        for s in &mut labelled.invalidations.sources {
            if s.hook_cause.is_none() && s.context_cause.is_some() {
                s.context_cause = Some("unknown".to_owned());
            }
        }
    }
    let owner = truth.cgroups.attributed().path.as_str().to_owned();
    // The truth's own BTF finding must agree with the generation the tier expects for this kernel.
    if let Some(found) = truth.kernel_api
        && found != api
    {
        problems.push(format!("the workload found kernel API {found:?} in BTF, the tier expects {api:?}"));
    }
    let mut expectations = families::expectations(&labelled, api, hooked);
    if mode == "fentry" && reference::Layout::running().is_ok_and(|l| !l.trampoline_struct_args) {
        families::change_pte_unobservable(&labelled, &mut expectations);
    }
    let Expectations { checks, closed, mut notes } = expectations;
    notes.extend(unhooked);

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let now = agent.scraper.metrics()?;
        if checks.iter().all(|c| increase(&before, &now, c) >= expected(c)) || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(QUIET_PERIOD);
    let after = agent.scraper.metrics().context("final scrape")?;
    let skipped: Vec<String> = agent
        .recursion_misses()
        .into_iter()
        .filter_map(|(id, n)| {
            let grown = n.saturating_sub(misses_before.get(&id).copied().unwrap_or(0));
            (grown > 0).then(|| format!("prog {id}: +{grown}"))
        })
        .collect();
    if !skipped.is_empty() {
        println!(
            "  note: BPF programs the kernel skipped (recursion_misses) during the scenario: {}",
            skipped.join(", ")
        );
    }
    remove_cgroup(&truth);
    // The trace first: removing any kprobe event (the counter's drop) empties the trace buffer.
    if let Some(trace) = trace {
        problems.extend(match trace.read() {
            Ok(traced) => trace_problems(&traced, &truth, &owner, api, &before, &after),
            Err(e) => vec![format!("the trace reference could not be read: {e:#}")],
        });
    }
    if let Some(reference) = reference {
        problems.extend(reference_problems(&reference, &truth, &owner, &before, &after));
    }

    let mut all = with_closed(checks, &closed, &before, &after);
    all.extend(other_cgroups_grown(&owner, &before, &after));
    let comparisons: Vec<Comparison> = all
        .iter()
        .map(|c| {
            let observed = increase(&before, &after, c);
            Comparison {
                series: c.series(),
                expected: c.expected,
                expected_max: c.max,
                observed,
                pass: within(c, observed),
            }
        })
        .collect();
    problems.extend(
        all.iter()
            .zip(&comparisons)
            .filter(|(_, r)| !r.pass)
            .map(|(c, r)| format!("{}: expected {}, observed {}", r.series, c.wanted(), r.observed)),
    );
    let callbacks = hooked.then(|| {
        let timed = subscribers::kvm_start_callbacks(&after).saturating_sub(subscribers::kvm_start_callbacks(&before));
        // The callback timer's kprobes need `bpf_get_func_ip` (5.15): before, the family is reported failed and
        // nothing is timed.
        (if old_helpers { 0 } else { truth.expected_tracepoint_total() }, timed)
    });
    if let Some((want, got)) = callbacks
        && want != got
    {
        problems.push(format!(
            "mmuscope_subscriber_callback_duration_seconds_count{{subscriber=\"kvm\",callback=\"invalidate_range_start\"}}: \
             expected {want}, observed {got}"
        ));
    }
    if let Some(name) = args.first() {
        problems.extend(needs::late_callback_problem(name, &truth, hooked, old_helpers, &before, &after));
    }
    // The stack request first: it ends on its own, and /api/v1/slow then symbolizes alone (under TCG each reads
    // the 5 MB symbol snapshot for seconds).
    if let Some(capture) = capture {
        let (p, shown) = capture.problems(&truth, api, &comparisons);
        println!("  /api/v1/stacks of {owner}:");
        for line in shown {
            println!("    {line}");
        }
        problems.extend(p);
    }
    if hooked {
        problems.extend(slow::problems(&agent.scraper, &labelled));
    }
    let unasserted = unasserted(&all, &owner, &before, &after);
    let mut other_cgroups = by_cgroup_event(&before, &after, families::INVALIDATIONS);
    other_cgroups.remove(&owner);
    Ok(Outcome {
        cgroup: owner,
        kernel_api: wire(&api),
        comparisons,
        notes,
        unasserted,
        problems,
        other_cgroups,
        callbacks,
        subscribers: listed,
    })
}

impl Outcome {
    fn into_record(self, kernel: &str, mode: &str, scenario: &str, args: Vec<String>, seconds: f64) -> Record {
        let per_event = |metric: &str, observed: bool| -> EventCounts {
            self.comparisons
                .iter()
                .filter_map(|c| {
                    let event = c.series.strip_prefix(metric)?.split("event=\"").nth(1)?.split('"').next()?;
                    Some((
                        event.to_owned(),
                        if observed { c.observed } else { i64::try_from(c.expected).unwrap_or(i64::MAX) },
                    ))
                })
                .filter(|(_, n)| *n != 0)
                .collect()
        };
        Record::Scenario {
            kernel_release: kernel.to_owned(),
            mode: mode.to_owned(),
            scenario: scenario.to_owned(),
            args,
            seconds,
            expected: per_event(families::INVALIDATIONS, false),
            observed: per_event(families::INVALIDATIONS, true),
            hist_count: per_event(families::HIST_COUNT, true),
            cgroup: self.cgroup,
            kernel_api: self.kernel_api,
            other_cgroups: self.other_cgroups,
            kvm_start_callbacks: self.callbacks,
            subscribers: self.subscribers,
            pass: self.problems.is_empty(),
            comparisons: self.comparisons,
            notes: self.notes,
            unasserted: self.unasserted,
            problems: self.problems,
        }
    }
}

/// `checks` plus, for every closed dimension, a zero check per label value that grew but no check lists.
fn with_closed(mut checks: Vec<Check>, closed: &[Closed], before: &Exposition, after: &Exposition) -> Vec<Check> {
    for c in closed {
        let listed: BTreeSet<String> = checks
            .iter()
            .filter(|k| k.metric == c.metric && k.cgroup == c.cgroup)
            .filter_map(|k| k.labels.get(c.label).cloned())
            .collect();
        let grown: BTreeSet<String> = after
            .samples_named(c.metric)
            .filter(|s| s.labels.get("cgroup") == Some(&c.cgroup))
            .filter_map(|s| s.labels.get(c.label).cloned())
            .filter(|v| !listed.contains(v))
            .collect();
        for value in grown {
            let check = Check::new(c.metric, &c.cgroup, &[(c.label, &value)], 0);
            if increase(before, after, &check) != 0 {
                checks.push(check);
            }
        }
    }
    checks
}

/// A zero check for every cgroup but `owner` whose series of a compared metric changed: the scenario's events all
/// belong to its owner (cross-cgroup's initiator and a fork from a sibling cgroup included), and nothing else in
/// the guest has a subscriber, pins pages or registers an interval, so no other cgroup may grow (or shrink).
fn other_cgroups_grown(owner: &str, before: &Exposition, after: &Exposition) -> Vec<Check> {
    let cgroups = |e: &Exposition, metric: &str| -> BTreeSet<String> {
        e.samples_named(metric).filter_map(|s| s.labels.get("cgroup").cloned()).collect()
    };
    let mut out = Vec::new();
    for metric in families::METRICS {
        let mut seen = cgroups(before, metric);
        seen.extend(cgroups(after, metric));
        for cgroup in seen.into_iter().filter(|c| c != owner) {
            let check = Check::new(metric, &cgroup, &[], 0);
            if increase(before, after, &check) != 0 {
                out.push(check);
            }
        }
    }
    out
}

/// Series of the compared metrics that grew for `owner` but no check selects, as `metric{labels}: +N`: what the
/// agent counted where the truth makes no statement (recorded, not asserted).
fn unasserted(checks: &[Check], owner: &str, before: &Exposition, after: &Exposition) -> Vec<String> {
    let group = |e: &Exposition| {
        let mut out: BTreeMap<String, f64> = BTreeMap::new();
        for metric in families::METRICS {
            for s in e.samples_named(metric).filter(|s| s.labels.get("cgroup").is_some_and(|c| c == owner)) {
                if checks.iter().any(|c| c.metric == *metric && matches(s, c)) {
                    continue;
                }
                let labels: Vec<String> =
                    s.labels.iter().filter(|(k, _)| *k != "cgroup").map(|(k, v)| format!("{k}={v:?}")).collect();
                *out.entry(format!("{metric}{{{}}}", labels.join(","))).or_insert(0.0) += s.value;
            }
        }
        out
    };
    let old = group(before);
    group(after)
        .into_iter()
        .filter_map(|(series, v)| {
            let delta = v - old.get(&series).copied().unwrap_or(0.0);
            (delta > 0.0).then(|| format!("{series}: +{}", delta as u64))
        })
        .collect()
}

fn wire(api: &SecondaryTlbApi) -> String {
    serde_json::to_value(api).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The workload leaves its cgroup for the scrape; remove it now (and empty parents).
fn remove_cgroup(truth: &GroundTruth) {
    let result = Hierarchies::discover()
        .map_err(anyhow::Error::from)
        .and_then(|h| cgroup::remove(&h, &truth.cgroups.default.path, true).map_err(anyhow::Error::from));
    if let Err(e) = result {
        eprintln!("warning: could not remove cgroup {}: {e:#}", truth.cgroups.default.path);
    }
    if let Some(g) = truth.cross_cgroup.as_ref().and_then(|c| c.initiator_cgroups.as_ref()) {
        let initiator = Hierarchies::discover()
            .map_err(anyhow::Error::from)
            .and_then(|h| cgroup::remove(&h, &g.default.path, true).map_err(anyhow::Error::from));
        if let Err(e) = initiator {
            eprintln!("warning: could not remove cgroup {}: {e:#}", g.default.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::increases::exposition;
    use super::*;

    #[test]
    fn closed_dimensions_add_zero_checks_for_unlisted_values_that_grew() {
        let before = exposition("m{cgroup=\"/a\",event=\"unmap\"} 1\n");
        let after = exposition(
            "m{cgroup=\"/a\",event=\"clear\"} 10\nm{cgroup=\"/a\",event=\"unmap\"} 3\n\
             m{cgroup=\"/a\",event=\"release\"} 0\nm{cgroup=\"/b\",event=\"migrate\"} 1\n",
        );
        let checks = vec![Check::new("m", "/a", &[("event", "clear")], 10)];
        let closed = [Closed { metric: "m", cgroup: "/a".into(), label: "event" }];
        let all = with_closed(checks, &closed, &before, &after);
        assert_eq!(all.len(), 2, "unmap grew and is not listed; release did not grow; /b is another cgroup");
        assert_eq!(all[1].series(), "m{cgroup=\"/a\",event=\"unmap\"}");
        assert_eq!((all[1].expected, increase(&before, &after, &all[1])), (0, 2));
    }

    #[test]
    fn other_cgroups_that_changed_get_zero_checks() {
        let m = families::INVALIDATIONS;
        let before =
            exposition(&format!("{m}{{cgroup=\"/own\"}} 1\n{m}{{cgroup=\"/gone\"}} 4\n{m}{{cgroup=\"/same\"}} 2\n"));
        let after =
            exposition(&format!("{m}{{cgroup=\"/own\"}} 9\n{m}{{cgroup=\"/new\"}} 1\n{m}{{cgroup=\"/same\"}} 2\n"));
        let grown: Vec<(String, i64)> = other_cgroups_grown("/own", &before, &after)
            .iter()
            .map(|c| (c.cgroup.clone(), increase(&before, &after, c)))
            .collect();
        assert_eq!(grown, [("/gone".to_owned(), -4), ("/new".to_owned(), 1)]);
    }
}
