//! Subscriber checks of one scenario: the inventory while a `--hold` workload keeps its VMs or its pin (one `kvm`
//! subscription per VM of its truth, one `mmuscope_mirror` for the test module's secondary-TLB subscriber, one
//! `mmuscope_mirror` per interval notifier of the module with its interval, under its pid, each with exactly the
//! callbacks it implements — see [`expected`] — and the has-pinned flag when it pinned), and the KVM callback
//! histogram (`invalidate_range_start` count = the KVM start callbacks
//! the truth knows: one per VM per bracket, which is what `kvm_unmap_hva_range` counts).

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mmuscope_abi::MAX_INTERVALS;
use mmuscope_tests::harness::Scraper;
use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::{GroundTruth, IntervalRange, KVM_KIND, MIRROR_KIND, SecondaryTlbApi};
use serde_json::Value;

/// Sweeps are on demand; under TCG the API answers slowly (a request may even time out: retried).
const SEEN_TIMEOUT: Duration = Duration::from_secs(60);
const CALLBACK_COUNT: &str = "mmuscope_subscriber_callback_duration_seconds_count";
const TRUNCATED_MMS: &str = "mmuscope_subscriber_inventory_truncated_mms";

/// What `/api/v1/subscribers` listed for the held workload's pid.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub kinds: Vec<String>,
    /// Every subscription, sorted: classic notifiers and each interval notifier, with the callbacks it implements.
    pub subscriptions: Vec<ListedSubscription>,
    /// The has-pinned flag: set for `fork-pinned`, clear for a KVM scenario (a wrong bit number reads another flag).
    pub has_pinned: bool,
    /// The mm's list or interval tree was listed only in part.
    pub truncated: bool,
}

/// One subscription of [`Listed`].
#[derive(Debug, Default, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct ListedSubscription {
    pub kind: String,
    /// An interval notifier's `[start, last]`; `None` for a classic notifier.
    pub interval: Option<IntervalRange>,
    /// The callbacks it implements, sorted.
    pub callbacks: Vec<String>,
}

/// One `/api/v1/subscribers` answer as JSON, asking again after a failed request until `deadline`.
fn subscribers_view(scraper: &Scraper, deadline: Instant) -> Result<Value> {
    loop {
        let (status, body) = match scraper.get("/api/v1/subscribers") {
            Ok(r) => r,
            Err(e) if Instant::now() < deadline => {
                println!("GET /api/v1/subscribers failed ({e:#}); retrying");
                continue;
            }
            Err(e) => return Err(e),
        };
        anyhow::ensure!(status == 200, "/api/v1/subscribers answered {status}: {body}");
        return serde_json::from_str(&body).context("/api/v1/subscribers is not JSON");
    }
}

/// Polls the API until the pid is listed (or the timeout); `None` if it never was.
pub fn listed(scraper: &Scraper, pid: u32) -> Result<Option<Listed>> {
    let deadline = Instant::now() + SEEN_TIMEOUT;
    loop {
        let v = subscribers_view(scraper, deadline)?;
        let entry = v["mms"].as_array().and_then(|mms| mms.iter().find(|m| m["pid"] == pid));
        // A callback first met by this request is named off the request path (kallsyms takes seconds under TCG):
        // its subscription reads `unknown` until then, so wait for the names rather than compare that.
        let pending = v["symbols_pending"].as_bool().context("symbols_pending in /api/v1/subscribers")?;
        if let Some(e) = entry.filter(|_| !pending || Instant::now() >= deadline) {
            return parse_entry(e).map(Some);
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// One `mms[]` entry of `/api/v1/subscribers`.
fn parse_entry(e: &Value) -> Result<Listed> {
    let kinds = e["kinds"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned)).collect();
    let has_pinned = e["has_pinned"].as_bool().context("has_pinned in /api/v1/subscribers")?;
    let flag = |name: &str| e[name].as_bool().with_context(|| format!("{name} in /api/v1/subscribers"));
    let truncated = flag("truncated")? || flag("intervals_truncated")?;
    let mut subscriptions = Vec::new();
    for s in e["subscriptions"].as_array().into_iter().flatten() {
        let interval = match s["interval"].as_bool().context("interval of a subscription")? {
            true => {
                let field = |name: &str| s[name].as_u64().with_context(|| format!("{name} of an interval notifier"));
                Some(IntervalRange { start: field("start")?, last: field("last")? })
            }
            false => None,
        };
        let mut callbacks: Vec<String> = s["callbacks"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["callback"].as_str().map(str::to_owned))
            .collect();
        callbacks.sort();
        subscriptions.push(ListedSubscription {
            kind: s["kind"].as_str().unwrap_or("?").to_owned(),
            interval,
            callbacks,
        });
    }
    subscriptions.sort();
    Ok(Listed { kinds, subscriptions, has_pinned, truncated })
}

/// Problems of the inventory against the truth, on a kernel of secondary-TLB generation `api` whose
/// `struct mmu_notifier_ops` has `change_pte` or not (`ops_change_pte`, from BTF).
pub fn inventory_problems(
    listed: &Option<Listed>,
    truth: &GroundTruth,
    api: SecondaryTlbApi,
    ops_change_pte: bool,
) -> Vec<String> {
    let want = expected(truth, api, ops_change_pte);
    match listed {
        None => vec![format!("pid {} never appeared in /api/v1/subscribers", truth.pid)],
        Some(l) if *l != want => {
            vec![format!("/api/v1/subscribers listed {l:?} for pid {}, expected {want:?}", truth.pid)]
        }
        Some(_) => Vec::new(),
    }
}

/// What the inventory must list for the held workload of `truth`. The agent names a subscriber by the module its ops
/// live in: `kvm`, and the test module's `mmuscope_mirror`. The callbacks each implements, of those the inventory
/// reads:
/// - KVM (6.1 and 6.12 virt/kvm/kvm_main.c `kvm_mmu_notifier_ops`): `invalidate_range_start`, `_end`, `release`,
///   `->invalidate_range` before 6.6 (6.1:918; none of `arch_invalidate_secondary_tlbs` after, 6.12:917), and
///   `change_pte` where the kernel's ops still have the member (5.10, 6.1; removed with it in 6.10);
/// - the module's secondary-TLB subscriber (`mirror_tlb_ops`): the kernel's secondary-TLB op alone;
/// - each of the module's interval notifiers (`mirror_ops`): `invalidate`, with the interval the workload registered;
///   the first [`MAX_INTERVALS`] in address order, and `truncated` when the workload registered more.
pub fn expected(truth: &GroundTruth, api: SecondaryTlbApi, ops_change_pte: bool) -> Listed {
    let secondary = match api {
        SecondaryTlbApi::InvalidateRange => "invalidate_range",
        SecondaryTlbApi::ArchInvalidateSecondaryTlbs => "arch_invalidate_secondary_tlbs",
    };
    let classic = |kind: &str, callbacks: &[&str]| {
        let mut callbacks: Vec<String> = callbacks.iter().map(|c| (*c).to_owned()).collect();
        callbacks.sort();
        ListedSubscription { kind: kind.to_owned(), interval: None, callbacks }
    };
    let mut kvm = vec!["invalidate_range_start", "invalidate_range_end", "release"];
    if api == SecondaryTlbApi::InvalidateRange {
        kvm.push(secondary);
    }
    if ops_change_pte {
        kvm.push("change_pte");
    }
    let mut subscriptions: Vec<ListedSubscription> = (0..truth.vms).map(|_| classic(KVM_KIND, &kvm)).collect();
    if truth.tlb_subscriber.is_some() {
        subscriptions.push(classic(MIRROR_KIND, &[secondary]));
    }
    let mut intervals: Vec<IntervalRange> = truth.interval.iter().flat_map(|i| i.notifiers.clone()).collect();
    intervals.sort();
    let truncated = intervals.len() > MAX_INTERVALS as usize;
    intervals.truncate(MAX_INTERVALS as usize);
    subscriptions.extend(intervals.into_iter().map(|r| ListedSubscription {
        kind: MIRROR_KIND.to_owned(),
        interval: Some(r),
        callbacks: vec!["invalidate".to_owned()],
    }));
    subscriptions.sort();
    let mut kinds: Vec<String> = subscriptions.iter().map(|s| s.kind.clone()).collect();
    kinds.sort();
    kinds.dedup();
    let has_pinned = truth.fork.as_ref().is_some_and(|f| f.pinned_pages > 0);
    Listed { kinds, subscriptions, has_pinned, truncated }
}

/// `subscriber_inventory_truncated_mms{list}` while the workload holds: the held mm is the guest's only one with
/// interval notifiers or several classic ones, so `intervals` is 1 exactly when it registered more than the
/// inventory lists, and `notifiers` 0.
pub fn truncation_problems(e: &Exposition, truth: &GroundTruth, api: SecondaryTlbApi) -> Vec<String> {
    let want_intervals = u64::from(expected(truth, api, false).truncated);
    let mut problems = Vec::new();
    for (list, want) in [("notifiers", 0), ("intervals", want_intervals)] {
        let got: Vec<u64> = e
            .samples_named(TRUNCATED_MMS)
            .filter(|s| s.labels.get("list").map(String::as_str) == Some(list))
            .map(|s| s.value as u64)
            .collect();
        if got != [want] {
            problems.push(format!("{TRUNCATED_MMS}{{list=\"{list}\"}}: expected {want}, observed {got:?}"));
        } else {
            println!("  ok   {TRUNCATED_MMS}{{list=\"{list}\"}}: expected {want}, observed {want}");
        }
    }
    problems
}

/// `subscriber_callback_duration_seconds_count{subscriber="kvm",callback="invalidate_range_start"}`.
pub fn kvm_start_callbacks(e: &Exposition) -> u64 {
    callbacks_timed(e, KVM_KIND, "invalidate_range_start")
}

/// `subscriber_callback_duration_seconds_count{subscriber,callback}`.
pub fn callbacks_timed(e: &Exposition, subscriber: &str, callback: &str) -> u64 {
    e.samples_named(CALLBACK_COUNT)
        .filter(|s| {
            s.labels.get("subscriber").map(String::as_str) == Some(subscriber)
                && s.labels.get("callback").map(String::as_str) == Some(callback)
        })
        .map(|s| s.value as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(intervals: u64) -> GroundTruth {
        let json = r#"{"schema_version":1,"scenario":"kvm-madvise",
            "params":{"iterations":3,"region_bytes":2097152,"page_bytes":4096},"pid":7,
            "cgroups":{"default":{"path":"/t/a","id":5,"dir":"/sys/fs/cgroup/t/a"},"attribution":"default"},"vms":1,
            "invalidations":{"brackets":{"clear":3},"kvm_unmap_hva_range":3,
              "sources":[{"event":"clear","count":3,"vms":1,"cause":"c","kernel_path":"k"}]},
            "interval":{"invalidations":0,"misses":0,"concurrent_misses":0,"read_waits":0,"read_retries":0,
              "hmm_busy":0,"kernel_path":""}}"#;
        let mut t = GroundTruth::from_json(json).unwrap();
        // registered out of order: the inventory lists them in address order
        let notifiers = (0..intervals).rev().map(|i| IntervalRange::of(0x7000_0000 + i * 0x1000, 0x1000)).collect();
        t.interval.as_mut().unwrap().notifiers = notifiers;
        t
    }

    #[test]
    fn kvm_lists_its_callbacks_per_kernel_and_each_interval_notifier_its_interval() {
        let old = expected(&truth(3), SecondaryTlbApi::InvalidateRange, true);
        assert_eq!(old.kinds, [KVM_KIND, MIRROR_KIND]);
        let kvm = &old.subscriptions[0];
        assert_eq!(
            (kvm.kind.as_str(), kvm.callbacks.join(" ")),
            (KVM_KIND, "change_pte invalidate_range invalidate_range_end invalidate_range_start release".to_owned())
        );
        let starts: Vec<u64> = old.subscriptions[1..].iter().map(|s| s.interval.unwrap().start).collect();
        assert_eq!(starts, [0x7000_0000, 0x7000_1000, 0x7000_2000]);
        assert!(old.subscriptions[1..].iter().all(|s| s.kind == MIRROR_KIND && s.callbacks == ["invalidate"]));
        assert!(!old.truncated);
        let new = expected(&truth(3), SecondaryTlbApi::ArchInvalidateSecondaryTlbs, false);
        assert_eq!(new.subscriptions[0].callbacks, ["invalidate_range_end", "invalidate_range_start", "release"]);
    }

    #[test]
    fn arming_is_judged_by_what_the_agent_says_it_can_do() {
        let hooks = |attached, always: Option<&str>, none: Option<&str>, transitions| SubscriptionHooks {
            attached,
            always: always.map(String::from),
            none_attached: none.map(String::from),
            transitions,
        };
        let switching = [hooks(false, None, None, 4), hooks(true, None, None, 5), hooks(false, None, None, 6)];
        assert!(arming_problems(&switching[0], &switching[1], &switching[2]).is_empty());
        let stuck = hooks(false, None, None, 4);
        assert_eq!(arming_problems(&switching[0], &stuck, &stuck).len(), 2, "never attached while held");
        let good = hooks(true, Some("kprobe mode"), None, 0);
        assert!(arming_problems(&good, &good, &good).is_empty());
        let never = hooks(false, None, Some("families off"), 0);
        assert!(arming_problems(&never, &never, &never).is_empty());
        let attached_anyway = hooks(true, None, Some("families off"), 0);
        assert_eq!(arming_problems(&never, &attached_anyway, &never).len(), 1, "none_attached but attached");
    }

    #[test]
    fn more_interval_notifiers_than_the_bound_list_the_first_and_say_truncated() {
        let want = expected(&truth(u64::from(MAX_INTERVALS) + 2), SecondaryTlbApi::InvalidateRange, false);
        assert!(want.truncated);
        assert_eq!(want.subscriptions.len(), 1 + MAX_INTERVALS as usize);
        let last = want.subscriptions.last().unwrap().interval.unwrap();
        assert_eq!(last.start, 0x7000_0000 + u64::from(MAX_INTERVALS - 1) * 0x1000, "the lowest addresses are kept");
    }
}

/// `/api/v1/subscribers`' `subscription_hooks`: the agent's operation-boundary, TLB-gather and cause-window hooks,
/// attached only while some mm has notifier subscriptions (unless kept for good: kprobe mode, 5.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionHooks {
    pub attached: bool,
    pub always: Option<String>,
    /// Why none is attached in this mode (the families with such hooks are off), if so.
    pub none_attached: Option<String>,
    pub transitions: u64,
}

/// Polls the API until `subscription_hooks.attached` is `want` and no switch is under way (or the timeout: the last
/// answer). A detach shows in `attached` as soon as it is wished for, and in `transitions` once done.
pub fn subscription_hooks(scraper: &Scraper, want: bool) -> Result<SubscriptionHooks> {
    let deadline = Instant::now() + SEEN_TIMEOUT;
    loop {
        let v = subscribers_view(scraper, deadline)?;
        let h = &v["subscription_hooks"];
        let hooks = SubscriptionHooks {
            attached: h["attached"].as_bool().context("subscription_hooks.attached")?,
            always: h["always"].as_str().map(str::to_owned),
            none_attached: h["none_attached"].as_str().map(str::to_owned),
            transitions: h["transitions"].as_u64().context("subscription_hooks.transitions")?,
        };
        let settled = hooks.always.is_some() || hooks.none_attached.is_some();
        let switching = h["switching"].as_bool().context("subscription_hooks.switching")?;
        if (hooks.attached == want && !switching) || settled || Instant::now() >= deadline {
            return Ok(hooks);
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// The subscription hooks around a workload holding a KVM VM: detached before it registered, attached while it held,
/// detached after it exited, two transitions in all; or attached for good throughout (with the reason), none; or
/// never attached (no family with such a hook attached in the mode, with the reason), none.
/// Prints the comparison; the problems.
pub fn arming_problems(before: &SubscriptionHooks, held: &SubscriptionHooks, after: &SubscriptionHooks) -> Vec<String> {
    let (for_good, never) = (before.always.is_some(), before.none_attached.is_some());
    let want = match (for_good, never) {
        (true, _) => [true, true, true],
        (false, true) => [false, false, false],
        (false, false) => [false, true, false],
    };
    let got = [before.attached, held.attached, after.attached];
    let want_transitions = if for_good || never { 0 } else { 2 };
    let transitions = after.transitions.saturating_sub(before.transitions);
    let mut problems = Vec::new();
    let mut line = |what: String, ok: bool| {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            problems.push(what);
        }
    };
    if let Some(why) = &before.always {
        println!("  subscription hooks attached for good: {why}");
    }
    if let Some(why) = &before.none_attached {
        println!("  no subscription hook attached: {why}");
    }
    line(format!("subscription_hooks.attached before/held/after: expected {want:?}, observed {got:?}"), want == got);
    line(
        format!(
            "subscription_hooks.transitions during the workload: expected {want_transitions}, observed {transitions}"
        ),
        want_transitions == transitions,
    );
    problems
}
