//! The kernel references ([`crate::reference`]) against the truth and the agent: each row printed, the failed ones
//! returned.

use std::collections::{BTreeMap, BTreeSet};

use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::{GroundTruth, ScenarioParams, SecondaryTlbApi, TlbContext};

use super::increases::{by_cgroup_event, increase};
use crate::families::{self, Check};
use crate::reference;

/// KVM's callback hits, counted by the kernel, against the truth's brackets × VMs and (before 6.6) the agent's
/// secondary-TLB increase for the owner × VMs. Prints each comparison; returns the failed ones.
pub(super) fn reference_problems(
    reference: &reference::KprobeCounter,
    truth: &GroundTruth,
    owner: &str,
    before: &Exposition,
    after: &Exposition,
) -> Vec<String> {
    let hits = match reference.hits() {
        Ok(h) => h,
        Err(e) => return vec![format!("the kprobe reference could not be read: {e:#}")],
    };
    let secondary = increase(before, after, &Check::new(families::SECONDARY_TLB, owner, &[], 0));
    let start_want = i64::try_from(truth.expected_tracepoint_total()).unwrap_or(i64::MAX);
    let rows = [
        (reference::KVM_START, "the truth's brackets × VMs".to_owned(), start_want),
        (
            reference::KVM_SECONDARY,
            format!("{}{{cgroup={owner:?}}} increase × VMs", families::SECONDARY_TLB),
            secondary.saturating_mul(i64::from(truth.vms)),
        ),
    ];
    let mut problems = Vec::new();
    for (function, what, want) in rows {
        let Some(counted) = hits.get(function) else { continue }; // not probed on this generation
        let counted = i64::try_from(*counted).unwrap_or(i64::MAX);
        let pass = counted == want;
        println!(
            "  {} reference: kprobe hits on {function} {counted}, {what} {want}",
            if pass { "ok  " } else { "FAIL" }
        );
        if !pass {
            problems.push(format!("kprobe reference: {function} ran {counted} times, {what} is {want}"));
        }
    }
    problems
}

/// The trace reference (brackets by event value, secondary-TLB calls by context; rules in
/// [`reference::BracketTrace`]) against the truth and the agent's increase for the owner. Prints every row;
/// returns the failed ones. The reference wins where it and the truth disagree: the truth is a model of the kernel,
/// the reference the kernel's own record of what ran.
pub(super) fn trace_problems(
    traced: &reference::Traced,
    truth: &GroundTruth,
    owner: &str,
    api: SecondaryTlbApi,
    before: &Exposition,
    after: &Exposition,
) -> Vec<String> {
    let mut problems = traced.problems.iter().map(|p| format!("trace reference: {p}")).collect::<Vec<_>>();
    if truth.tlb_subscriber.is_some()
        && let Some(why) = &traced.mirror_refused
    {
        problems.push(format!("trace reference: the test module's callback is not observed: {why}"));
    }
    if matches!(truth.scenario, ScenarioParams::RdmaOdp(_))
        && let Some(why) = &traced.rxe_refused
    {
        problems.push(format!("trace reference: rxe's ODP callback is not observed: {why}"));
    }
    // Interval readers: where the truth cannot say (timing), the reference is the only witness and must be armed.
    let timed = truth.interval.as_ref().is_some_and(|i| i.collisions_timed);
    if let Some(why) = &traced.readers_refused {
        if timed {
            problems.push(format!("trace reference: interval readers are not observed: {why}"));
        } else {
            println!("  note trace reference: interval readers are not observed (not compared): {why}");
        }
    }
    let mut row = |what: String, counted: u64, truth: Option<(u64, u64)>, agent: i64| {
        let truth_ok = truth.is_none_or(|(lo, hi)| (lo..=hi).contains(&counted));
        let pass = truth_ok && i64::try_from(counted) == Ok(agent);
        let wanted = match truth {
            Some((lo, hi)) if lo == hi => lo.to_string(),
            Some((lo, hi)) => format!("{lo}..={hi}"),
            None => "(no statement)".to_owned(),
        };
        println!(
            "  {} trace reference: {what} {counted}, truth {wanted}, agent {agent}",
            if pass { "ok  " } else { "FAIL" }
        );
        if !pass {
            problems.push(format!("trace reference: {what} counted {counted}, truth {wanted}, agent {agent}"));
        }
    };

    let truth_events: BTreeMap<String, u64> =
        truth.invalidations.brackets.iter().map(|(e, n)| (families::wire(e), *n)).collect();
    let agent_event =
        |e: &str| increase(before, after, &Check::new(families::INVALIDATIONS, owner, &[("event", e)], 0));
    let mut events: BTreeSet<String> = truth_events.keys().chain(traced.brackets.keys()).cloned().collect();
    events
        .extend(by_cgroup_event(before, after, families::INVALIDATIONS).remove(owner).unwrap_or_default().into_keys());
    for e in events {
        let counted = traced.brackets.get(&e).copied().unwrap_or(0);
        let want = truth_events.get(&e).copied().unwrap_or(0);
        row(format!("brackets{{event={e:?}}}"), counted, Some((want, want)), agent_event(&e));
    }

    // Secondary-TLB calls: the truth's bounds per context (none where it has no part), the agent's reached calls.
    let mut bounds: BTreeMap<TlbContext, (u64, u64)> = BTreeMap::new();
    if let Some(tlb) = &truth.secondary_tlb {
        for s in tlb.sources.iter().filter(|s| s.api == api) {
            let b = bounds.entry(s.context).or_insert((0, 0));
            *b = (b.0 + s.count, b.1 + s.count_max.unwrap_or(s.count));
        }
    }
    for context in [TlbContext::Bracket, TlbContext::Gather, TlbContext::Outside] {
        let name = families::wire(&context);
        let agent = increase(before, after, &Check::new(families::SECONDARY_TLB, owner, &[("context", &name)], 0));
        let raw = traced.secondary_calls.get(&context).copied().unwrap_or(0);
        let reached = traced.secondary_reached.get(&context).copied().unwrap_or(0);
        // With the part, the truth lists every context of this API (closed): an unlisted one is 0.
        let want = truth.secondary_tlb.as_ref().map(|_| bounds.get(&context).copied().unwrap_or((0, 0)));
        row(
            format!("secondary-TLB calls reaching an implementer{{context={name:?}}} (entry-point calls {raw})"),
            reached,
            want,
            agent,
        );
    }

    // Interval readers (`hmm_range_fault` -EBUSY, `mmu_interval_read_begin` waits): the truth's figure unless it
    // depends on timing (then no statement: the agent must equal the reference), 0 without an interval part.
    if traced.readers_refused.is_none() {
        let want = |f: fn(&mmuscope_tests::truth::IntervalTruth) -> u64| {
            (!timed).then(|| truth.interval.as_ref().map_or(0, f)).map(|n| (n, n))
        };
        let agent = |metric| increase(before, after, &Check::new(metric, owner, &[], 0));
        row("hmm_range_fault -EBUSY".to_owned(), traced.hmm_busy, want(|i| i.hmm_busy), agent(families::HMM_BUSY));
        row(
            "interval reader waits".to_owned(),
            traced.read_waits,
            want(|i| i.read_waits),
            agent(families::INTERVAL_WAITS),
        );
        row(
            "interval reader waits (wait histogram count)".to_owned(),
            traced.read_waits,
            want(|i| i.read_waits),
            agent(families::INTERVAL_WAIT_COUNT),
        );
    }
    problems
}
