//! What the agent must show for one ground truth, one module per metric family (or group of families that one
//! truth part describes). Every expected value comes from the truth the workload printed — what it did, plus the
//! kernel API it found in BTF — never from a constant here.
//!
//! A [`Check`] selects one series group: the metric, the attribution cgroup (or, for the agent's own error
//! counters, no cgroup label), and the label values that matter (summed over every other label). It is exact,
//! unless the truth bounds the figure (`max`; the truth's source says why no exact value can be known). A
//! [`Closed`] dimension says the truth lists every value of a label for a cgroup: any other value that grows
//! during the run is a mismatch (expected 0). The `event`, `cause`, `initiator`, secondary-TLB `context` and
//! double `kind` labels are closed whenever the truth has the part that describes them; a truth without the part
//! (the mirror scenario's secondary-TLB calls, issue 19) makes no statement, and its growth is listed as
//! unasserted. Every other cgroup, and the agent's error counters, must not grow at all (`compare`, [`health`]).

mod brackets;
mod causes;
mod change_pte;
mod cross_cgroup;
mod doubles;
mod fork;
mod fork_hugetlb;
pub mod health;
mod intervals;
mod secondary_tlb;

use std::collections::BTreeMap;

pub use brackets::{HIST_COUNT, INVALIDATIONS};
pub use change_pte::unobservable as change_pte_unobservable;
pub use doubles::DOUBLES;
pub use intervals::{HMM_BUSY, INTERVAL_WAIT_COUNT, INTERVAL_WAITS};
use mmuscope_tests::truth::{GroundTruth, SecondaryTlbApi};
pub use secondary_tlb::SECONDARY_TLB;

/// Every metric some family compares (the diagnostics list their series the truth leaves unspecified).
pub const METRICS: &[&str] = &[
    brackets::INVALIDATIONS,
    brackets::HIST_COUNT,
    secondary_tlb::SECONDARY_TLB,
    doubles::DOUBLES,
    doubles::REDUNDANT_BYTES,
    doubles::AVOIDED,
    fork::COPIES,
    fork::COPY_BYTES,
    fork::THP_SPLITS,
    fork::FORKS_WITH_PINNED,
    fork_hugetlb::COPIES,
    fork_hugetlb::COPY_BYTES,
    cross_cgroup::CROSS_CGROUP,
    change_pte::CHANGE_PTE,
    intervals::INTERVAL_HITS,
    intervals::INTERVAL_WAITS,
    intervals::INTERVAL_WAIT_COUNT,
    intervals::HMM_BUSY,
    intervals::READ_COLLISIONS,
];

/// The `subscriber` label of the agent's bracket and double-notification families.
pub const SUBSCRIBER: &str = "subscriber";

/// The `subscriber` value of every bracket on the truth's mm: the kinds the workload registered there, sorted and
/// joined with `+` as the agent names them — `kvm` for its VMs, `mmuscope_mirror` for the test module's
/// secondary-TLB subscriber or `mirror-collide`'s interval notifier (a bracket missing the interval reaches no one
/// and is not counted). `None` where the truth splits its brackets by subscriber itself (`subscribers`), registered
/// nothing, or has another driver's interval notifier.
pub fn subscriber(truth: &GroundTruth) -> Option<String> {
    if truth.subscribers.is_some() {
        return None;
    }
    let mut kinds = Vec::new();
    if truth.vms > 0 {
        kinds.push(mmuscope_tests::truth::KVM_KIND);
    }
    // The test module's subscribers; another driver's interval notifier (e.g. rxe's ODP in `rdma-odp`) is named by
    // its own module, which this check does not assume: no statement there.
    let mirror_interval = matches!(truth.scenario, mmuscope_tests::truth::ScenarioParams::MirrorCollide(_));
    if truth.tlb_subscriber.is_some() || mirror_interval {
        kinds.push(mmuscope_tests::truth::MIRROR_KIND);
    } else if truth.interval.is_some() {
        return None;
    }
    kinds.sort_unstable();
    (!kinds.is_empty()).then(|| kinds.join("+"))
}

/// One expected increase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub metric: &'static str,
    pub cgroup: String,
    /// Label values the series must have (besides `cgroup`); other labels are summed over.
    pub labels: BTreeMap<&'static str, String>,
    pub expected: u64,
    /// `Some(max)`: the truth bounds the figure, `expected..=max` passes; `None`: exactly `expected`.
    pub max: Option<u64>,
}

impl Check {
    pub fn new(metric: &'static str, cgroup: &str, labels: &[(&'static str, &str)], expected: u64) -> Self {
        let labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        Self { metric, cgroup: cgroup.to_owned(), labels, expected, max: None }
    }

    /// This check with an upper bound; `max == expected` keeps it exact.
    pub fn up_to(self, max: u64) -> Self {
        Self { max: (max != self.expected).then_some(max), ..self }
    }

    /// A counter of the agent itself (no `cgroup` label), summed over its labels.
    pub fn agent_wide(metric: &'static str, expected: u64) -> Self {
        Self::new(metric, "", &[], expected)
    }

    /// What passes, as the records print it: `7`, or `0..=1` for a bound.
    pub fn wanted(&self) -> String {
        match self.max {
            Some(max) => format!("{}..={max}", self.expected),
            None => self.expected.to_string(),
        }
    }

    /// `metric{cgroup="…",label="…"}`.
    pub fn series(&self) -> String {
        let mut parts = if self.cgroup.is_empty() { Vec::new() } else { vec![format!("cgroup={:?}", self.cgroup)] };
        parts.extend(self.labels.iter().map(|(k, v)| format!("{k}={v:?}")));
        if parts.is_empty() {
            return self.metric.to_owned();
        }
        format!("{}{{{}}}", self.metric, parts.join(","))
    }
}

/// Every value of `label` of `metric` for `cgroup` that grows must be one the checks list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub metric: &'static str,
    pub cgroup: String,
    pub label: &'static str,
}

/// The expectations of one truth.
#[derive(Debug, Default)]
pub struct Expectations {
    pub checks: Vec<Check>,
    pub closed: Vec<Closed>,
    /// Parts of the truth no family here can observe in this mode, said once each (recorded, not asserted).
    pub notes: Vec<String>,
}

/// Everything the agent must show for `truth` on a kernel with `api`; `hooked`: fentry or kprobe mode (caller
/// hooks for causes, interval probes).
pub fn expectations(truth: &GroundTruth, api: SecondaryTlbApi, hooked: bool) -> Expectations {
    let owner = truth.cgroups.attributed().path.as_str();
    let mut out = Expectations::default();
    brackets::expect(truth, owner, &mut out);
    secondary_tlb::expect(truth, owner, api, &mut out);
    doubles::expect(truth, owner, api, &mut out);
    fork::expect(truth, owner, &mut out);
    if hooked {
        fork_hugetlb::expect(truth, owner, &mut out);
    }
    cross_cgroup::expect(truth, owner, &mut out);
    if hooked {
        change_pte::expect(truth, owner, &mut out);
    }
    causes::expect(truth, owner, hooked, &mut out);
    health::expect(&mut out);
    if hooked {
        intervals::expect(truth, owner, &mut out);
    }
    out
}

/// The `snake_case` wire name of a truth enum (the agent's label values are the same strings).
pub fn wire<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kvm-madvise-like truth of 3 rounds with per-generation parts, as the workload prints it.
    fn truth() -> GroundTruth {
        let json = r#"{"schema_version":1,"scenario":"kvm-madvise",
            "params":{"iterations":3,"region_bytes":2097152,"page_bytes":4096},"pid":7,
            "cgroups":{"default":{"path":"/t/a","id":5,"dir":"/sys/fs/cgroup/t/a"},"attribution":"default"},"vms":1,
            "invalidations":{"brackets":{"clear":3},"kvm_unmap_hva_range":3,
              "sources":[{"event":"clear","count":3,"vms":1,"cause":"c","kernel_path":"k"}]},
            "kernel_api":"invalidate_range",
            "double_notifications":{"sources":[
              {"kind":"end_then_gather","count":3,"redundant_bytes":12288,"api":"invalidate_range","cause":"","kernel_path":""},
              {"kind":"end_then_gather","count":0,"redundant_bytes":0,"api":"arch_invalidate_secondary_tlbs","cause":"","kernel_path":""},
              {"kind":"avoided_only_end","count":2,"redundant_bytes":0,"api":"invalidate_range","cause":"","kernel_path":""}]},
            "secondary_tlb":{"sources":[
              {"api":"invalidate_range","context":"bracket","scope":"range","count":3,"cause":"","kernel_path":""},
              {"api":"invalidate_range","context":"gather","count":3,"cause":"","kernel_path":""},
              {"api":"arch_invalidate_secondary_tlbs","context":"gather","scope":"range","count":3,"cause":"","kernel_path":""}]}}"#;
        GroundTruth::from_json(json).unwrap()
    }

    fn series(e: &Expectations) -> Vec<String> {
        e.checks.iter().map(|c| format!("{} = {}", c.series(), c.wanted())).collect()
    }

    #[test]
    fn every_family_the_truth_describes_for_the_old_api() {
        let e = expectations(&truth(), SecondaryTlbApi::InvalidateRange, false);
        assert_eq!(
            series(&e),
            [
                "mmuscope_invalidations_total{cgroup=\"/t/a\",event=\"clear\",subscriber=\"kvm\"} = 3",
                "mmuscope_invalidation_duration_seconds_count{cgroup=\"/t/a\",event=\"clear\",subscriber=\"kvm\"} = 3",
                "mmuscope_secondary_tlb_invalidations_total{cgroup=\"/t/a\",context=\"bracket\",scope=\"range\"} = 3",
                "mmuscope_secondary_tlb_invalidations_total{cgroup=\"/t/a\",context=\"gather\"} = 3",
                "mmuscope_double_notifications_total{cgroup=\"/t/a\",kind=\"end_then_gather\",subscriber=\"kvm\"} = 3",
                "mmuscope_redundant_invalidation_bytes_total{cgroup=\"/t/a\",kind=\"end_then_gather\",subscriber=\"kvm\"} = 12288",
                "mmuscope_double_notifications_avoided_total{cgroup=\"/t/a\",subscriber=\"kvm\"} = 2",
                "mmuscope_unmatched_bracket_ends_total = 0",
                "mmuscope_invalidation_start_failures_total = 0",
                "mmuscope_probe_read_errors_total = 0",
                "mmuscope_map_update_errors_total = 0",
            ]
        );
        let closed: Vec<_> = e.closed.iter().map(|c| (c.metric, c.label)).collect();
        assert!(
            closed.contains(&(INVALIDATIONS, "event")) && closed.contains(&(cross_cgroup::CROSS_CGROUP, "initiator"))
        );
        // A KVM scenario's brackets and doubles all reach KVM, and nothing else.
        for metric in [INVALIDATIONS, HIST_COUNT, doubles::DOUBLES, doubles::REDUNDANT_BYTES, doubles::AVOIDED] {
            assert!(closed.contains(&(metric, SUBSCRIBER)), "{metric} closed by subscriber: {closed:?}");
        }
    }

    #[test]
    fn the_new_api_takes_its_own_entries_and_zeroes() {
        let e = expectations(&truth(), SecondaryTlbApi::ArchInvalidateSecondaryTlbs, false);
        let s = series(&e);
        assert!(
            s.contains(
                &"mmuscope_double_notifications_total{cgroup=\"/t/a\",kind=\"end_then_gather\",subscriber=\"kvm\"} = 0"
                    .into()
            )
        );
        assert!(
            s.contains(
                &"mmuscope_secondary_tlb_invalidations_total{cgroup=\"/t/a\",context=\"gather\",scope=\"range\"} = 3"
                    .into()
            )
        );
        assert!(
            s.contains(&"mmuscope_double_notifications_avoided_total{cgroup=\"/t/a\",subscriber=\"kvm\"} = 0".into()),
            "none listed: {s:?}"
        );
        assert!(!s.iter().any(|l| l.contains("context=\"bracket\"")), "not listed for 6.6+, so closed to zero: {s:?}");
        let closed: Vec<_> = e.closed.iter().map(|c| (c.metric, c.label)).collect();
        for want in [(SECONDARY_TLB, "context"), (doubles::DOUBLES, "kind"), (doubles::REDUNDANT_BYTES, "kind")] {
            assert!(closed.contains(&want), "{want:?} closed: {closed:?}");
        }
    }

    #[test]
    fn interval_figures_come_from_the_mirror_truth() {
        let mut t = truth();
        let hooked = |t: &GroundTruth| series(&expectations(t, SecondaryTlbApi::InvalidateRange, true));
        assert!(hooked(&t).contains(&"mmuscope_interval_invalidations_total{cgroup=\"/t/a\"} = 0".to_owned()));
        t.interval = Some(mmuscope_tests::truth::IntervalTruth {
            invalidations: 16,
            misses: 12,
            concurrent_misses: 2,
            read_waits: 2,
            read_retries: 2,
            hmm_busy: 2,
            collisions_timed: false,
            read_collisions: Some(5),
            kernel_path: String::new(),
            notifiers: Vec::new(),
        });
        let s = hooked(&t);
        for want in [
            "mmuscope_interval_invalidations_total{cgroup=\"/t/a\"} = 16",
            "mmuscope_interval_read_waits_total{cgroup=\"/t/a\"} = 2",
            "mmuscope_interval_read_wait_seconds_count{cgroup=\"/t/a\"} = 2",
            "mmuscope_hmm_range_fault_busy_total{cgroup=\"/t/a\"} = 2",
            "mmuscope_interval_read_collisions_total{cgroup=\"/t/a\"} = 5",
        ] {
            assert!(s.contains(&want.to_owned()), "{want} in {s:?}");
        }
        assert!(
            !series(&expectations(&t, SecondaryTlbApi::InvalidateRange, false)).iter().any(|l| l.contains("interval"))
        );
    }

    #[test]
    fn brackets_split_by_subscriber_where_the_truth_splits_them() {
        let mut t = truth();
        let brackets = [("kvm".to_owned(), 1), ("kvm+mmuscope_mirror".to_owned(), 2)].into();
        t.subscribers = Some(mmuscope_tests::truth::SubscriberSplitTruth { brackets, doubles: "kvm".into() });
        let e = expectations(&t, SecondaryTlbApi::InvalidateRange, true);
        let s = series(&e);
        for want in [
            "mmuscope_invalidations_total{cgroup=\"/t/a\",event=\"clear\"} = 3",
            "mmuscope_invalidations_total{cgroup=\"/t/a\",subscriber=\"kvm\"} = 1",
            "mmuscope_invalidations_total{cgroup=\"/t/a\",subscriber=\"kvm+mmuscope_mirror\"} = 2",
            "mmuscope_invalidation_duration_seconds_count{cgroup=\"/t/a\",subscriber=\"kvm+mmuscope_mirror\"} = 2",
            "mmuscope_double_notifications_total{cgroup=\"/t/a\",kind=\"end_then_gather\",subscriber=\"kvm\"} = 3",
        ] {
            assert!(s.contains(&want.to_owned()), "{want} in {s:?}");
        }
        let closed: Vec<_> = e.closed.iter().map(|c| (c.metric, c.label)).collect();
        assert!(closed.contains(&(INVALIDATIONS, SUBSCRIBER)) && closed.contains(&(doubles::AVOIDED, SUBSCRIBER)));
    }

    #[test]
    fn hugetlb_fork_part_in_hooked_modes_only() {
        let mut t = truth();
        t.hugetlb_fork = Some(mmuscope_tests::truth::HugetlbForkTruth {
            child_pid: 8,
            huge_pages: 4,
            huge_page_bytes: 2 << 20,
            pinned_huge_pages: 4,
            copied_huge_pages: 4,
            copied_bytes: 4 * (2 << 20),
            kernel_path: String::new(),
        });
        let s = series(&expectations(&t, SecondaryTlbApi::InvalidateRange, true));
        for want in [
            "mmuscope_fork_pinned_hugetlb_copies_total{cgroup=\"/t/a\"} = 4",
            "mmuscope_fork_pinned_hugetlb_copy_bytes_total{cgroup=\"/t/a\"} = 8388608",
        ] {
            assert!(s.contains(&want.to_owned()), "{want} in {s:?}");
        }
        let tracepoint = series(&expectations(&t, SecondaryTlbApi::InvalidateRange, false));
        assert!(!tracepoint.iter().any(|l| l.contains("hugetlb")), "no hugetlb family in tracepoint mode");
    }

    #[test]
    fn fork_and_cross_cgroup_parts() {
        let mut t = truth();
        t.fork = Some(mmuscope_tests::truth::ForkTruth {
            forks: 1,
            child_pid: 8,
            pages: 512,
            pinned_pages: 512,
            copied_pages: 512,
            copied_bytes: 512 * 4096,
            forks_with_pinned_pages: 1,
            thp_splits: 1,
            kernel_path: String::new(),
            forker_cgroup: None,
        });
        let s = series(&expectations(&t, SecondaryTlbApi::InvalidateRange, false));
        for want in [
            "mmuscope_fork_pinned_page_copies_total{cgroup=\"/t/a\"} = 512",
            "mmuscope_fork_pinned_copy_bytes_total{cgroup=\"/t/a\"} = 2097152",
            "mmuscope_fork_pinned_thp_splits_total{cgroup=\"/t/a\"} = 1",
            "mmuscope_forks_with_pinned_pages_total{cgroup=\"/t/a\"} = 1",
        ] {
            assert!(s.contains(&want.to_owned()), "{want} in {s:?}");
        }
    }
}
