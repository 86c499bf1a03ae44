//! Step 3: one workload scenario against the running agent. Scrape, run the workload, scrape until the attribution
//! cgroup's counters reach the ground truth (or a timeout), wait a quiet period, scrape once more, and compare the
//! increases exactly, per `event` label.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mmuscope_tests::cgroup::{self, Hierarchies};
use mmuscope_tests::harness::held::HeldWorkload;
use mmuscope_tests::harness::run_workload;
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::GroundTruth;

use crate::agent::Agent;
use crate::record::{EventCounts, Record};
use crate::subscribers::{self, Listed};

const HIST_COUNT: &str = "mmuscope_invalidation_duration_seconds_count";
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// After the expected total appears, wait this long and scrape again to catch late extra events.
const QUIET_PERIOD: Duration = Duration::from_secs(1);

/// `cgroup` → `event` → value, for one metric.
type ByCgroup = BTreeMap<String, BTreeMap<String, f64>>;

pub fn scenario(agent: &Agent, workload: &Path, line: &str, mode: &str, kernel: &str) -> Record {
    let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    let name = args.first().cloned().unwrap_or_default();
    // Subscribers are checked in the modes that time callbacks, on the scenario whose truth is one VM per pid.
    let hooked = mode == "fentry" || mode == "kprobe";
    match run(agent, workload, &args, hooked && name == "kvm-madvise") {
        Ok(outcome) => outcome.into_record(kernel, mode, &name, args, hooked),
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
    expected: EventCounts,
    observed: EventCounts,
    hist_count: EventCounts,
    other_cgroups: BTreeMap<String, EventCounts>,
    /// KVM start callbacks: the truth's count and the histogram's increase.
    callbacks: (u64, u64),
    /// The held workload's inventory entry, when checked.
    inventory: Option<(Option<Listed>, Vec<String>)>,
}

fn run(agent: &Agent, workload: &Path, args: &[String], check_inventory: bool) -> Result<Outcome> {
    let before = agent.scraper.metrics().context("scrape before the workload")?;
    let (truth, inventory) = if check_inventory {
        let held =
            HeldWorkload::spawn(workload, args.iter().map(String::as_str).chain(["--hold"]), SETTLE_TIMEOUT * 3)?;
        let listed = subscribers::listed(&agent.scraper, held.pid());
        let truth = held.release()?;
        let listed = listed?;
        let problems = subscribers::inventory_problems(&listed, &truth);
        (truth, Some((listed, problems)))
    } else {
        (run_workload(workload, args)?, None)
    };
    let label = truth.cgroups.attributed().path.as_str().to_owned();
    let expected = expected(&truth)?;
    let target: u64 = expected.values().sum();

    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let now = agent.scraper.metrics()?;
        let reached: u64 = increase(&by_cgroup(&before, INVALIDATIONS), &by_cgroup(&now, INVALIDATIONS))
            .get(&label)
            .map_or(0, |e| e.values().sum());
        if reached >= target || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(QUIET_PERIOD);
    let after = agent.scraper.metrics().context("final scrape")?;
    remove_cgroup(&truth);

    let mut counts = increase(&by_cgroup(&before, INVALIDATIONS), &by_cgroup(&after, INVALIDATIONS));
    let mut hist = increase(&by_cgroup(&before, HIST_COUNT), &by_cgroup(&after, HIST_COUNT));
    let callbacks = (
        truth.expected_tracepoint_total(),
        subscribers::kvm_start_callbacks(&after).saturating_sub(subscribers::kvm_start_callbacks(&before)),
    );
    Ok(Outcome {
        callbacks,
        inventory,
        observed: counts.remove(&label).unwrap_or_default(),
        hist_count: hist.remove(&label).unwrap_or_default(),
        other_cgroups: counts,
        cgroup: label,
        expected,
    })
}

impl Outcome {
    fn into_record(self, kernel: &str, mode: &str, scenario: &str, args: Vec<String>, hooked: bool) -> Record {
        let mut problems = problems(&self.expected, &self.observed, &self.hist_count);
        let (want, got) = self.callbacks;
        if hooked && want != got {
            problems.push(format!(
                "mmuscope_subscriber_callback_duration_seconds_count{{subscriber=\"kvm\",callback=\"invalidate_range_start\"}}: \
                 expected {want}, observed {got}"
            ));
        }
        let (inventory, inventory_problems) = self.inventory.unzip();
        problems.extend(inventory_problems.into_iter().flatten());
        Record::Scenario {
            kernel_release: kernel.to_owned(),
            mode: mode.to_owned(),
            scenario: scenario.to_owned(),
            args,
            cgroup: self.cgroup,
            expected: self.expected,
            observed: self.observed,
            hist_count: self.hist_count,
            other_cgroups: self.other_cgroups,
            kvm_start_callbacks: hooked.then_some(self.callbacks),
            subscribers: inventory.flatten(),
            pass: problems.is_empty(),
            problems,
        }
    }
}

/// Every disagreement, one line each: counter vs truth per event (including events the truth does not list), then
/// histogram count vs truth.
fn problems(expected: &EventCounts, observed: &EventCounts, hist: &EventCounts) -> Vec<String> {
    let mut out = Vec::new();
    let events: BTreeSet<&String> = expected.keys().chain(observed.keys()).chain(hist.keys()).collect();
    for e in &events {
        let (want, got) = (expected.get(*e).copied().unwrap_or(0), observed.get(*e).copied().unwrap_or(0));
        if want != got {
            out.push(format!("{INVALIDATIONS}{{event=\"{e}\"}}: expected {want}, observed {got}"));
        }
    }
    for e in &events {
        let (want, got) = (expected.get(*e).copied().unwrap_or(0), hist.get(*e).copied().unwrap_or(0));
        if want != got {
            out.push(format!("{HIST_COUNT}{{event=\"{e}\"}}: expected {want}, observed {got}"));
        }
    }
    out
}

/// The truth's brackets with the agent's event names (the truth's serde names are the same strings).
fn expected(truth: &GroundTruth) -> Result<EventCounts> {
    truth
        .invalidations
        .brackets
        .iter()
        .map(|(event, n)| {
            let name = serde_json::to_value(event)?.as_str().context("event names serialise as strings")?.to_owned();
            Ok((name, *n))
        })
        .collect()
}

fn by_cgroup(e: &Exposition, metric: &str) -> ByCgroup {
    let mut out = ByCgroup::new();
    for s in e.samples_named(metric) {
        let cgroup = s.labels.get("cgroup").cloned().unwrap_or_default();
        let event = s.labels.get("event").cloned().unwrap_or_default();
        *out.entry(cgroup).or_default().entry(event).or_insert(0.0) += s.value;
    }
    out
}

/// Non-zero increases per cgroup and event (absent = 0).
fn increase(before: &ByCgroup, after: &ByCgroup) -> BTreeMap<String, EventCounts> {
    let mut out: BTreeMap<String, EventCounts> = BTreeMap::new();
    for (cgroup, events) in after {
        for (event, value) in events {
            let old = before.get(cgroup).and_then(|e| e.get(event)).copied().unwrap_or(0.0);
            let delta = value - old;
            if delta != 0.0 {
                // Counters are integers well below 2^53, so the f64 difference is exact.
                out.entry(cgroup.clone()).or_default().insert(event.clone(), delta.max(0.0) as u64);
            }
        }
    }
    out
}

/// The workload leaves its cgroup for the scrape; remove it now (and empty parents).
fn remove_cgroup(truth: &GroundTruth) {
    let result = Hierarchies::discover()
        .map_err(anyhow::Error::from)
        .and_then(|h| cgroup::remove(&h, &truth.cgroups.default.path, true).map_err(anyhow::Error::from));
    if let Err(e) = result {
        eprintln!("warning: could not remove cgroup {}: {e:#}", truth.cgroups.default.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pairs: &[(&str, u64)]) -> EventCounts {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn extra_and_missing_events_are_problems() {
        let expected = counts(&[("clear", 1000)]);
        assert!(problems(&expected, &expected, &expected).is_empty());
        let observed = counts(&[("clear", 1000), ("unmap", 2)]);
        let got = problems(&expected, &observed, &observed);
        assert_eq!(
            got,
            [
                "mmuscope_invalidations_total{event=\"unmap\"}: expected 0, observed 2",
                "mmuscope_invalidation_duration_seconds_count{event=\"unmap\"}: expected 0, observed 2"
            ]
        );
        let got = problems(&expected, &counts(&[]), &counts(&[("clear", 999)]));
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn increases_per_cgroup_and_event() {
        let text = "m{cgroup=\"/a\",event=\"clear\",blockable=\"true\"} 5\nm{cgroup=\"/a\",event=\"clear\",blockable=\"false\"} 1\n";
        let before = by_cgroup(&Exposition::parse(text).unwrap(), "m");
        let text2 = format!("{text}m{{cgroup=\"/b\",event=\"unmap\",blockable=\"true\"}} 2\n");
        let after = by_cgroup(&Exposition::parse(&text2.replace("} 5", "} 7")).unwrap(), "m");
        let inc = increase(&before, &after);
        assert_eq!(inc["/a"], counts(&[("clear", 2)]));
        assert_eq!(inc["/b"], counts(&[("unmap", 2)]));
        assert_eq!(by_cgroup(&Exposition::parse(text).unwrap(), "m")["/a"]["clear"], 6.0);
    }
}
