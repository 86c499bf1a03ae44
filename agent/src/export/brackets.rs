//! Invalidation-bracket families: `invalidations_total` and `invalidation_duration_seconds`.

use std::collections::BTreeMap;

use mmuscope_abi::{BracketStats, Cause, key_flags};
use prometheus::proto::MetricFamily;

use super::{
    families::{self, HistogramRow, Labels},
    help::help,
    histogram,
};
use crate::{collect::Snapshot, kernel::EventNames};

/// `cgroup(flags, id)` gives the cgroup label pairs of a key.
pub fn families(snap: &Snapshot, cgroup: &dyn Fn(u32, u64) -> Labels, events: &EventNames) -> Vec<MetricFamily> {
    // Aggregate by label set: several ids can share labels (e.g. "unknown", or "other").
    let mut counts: BTreeMap<Labels, u64> = BTreeMap::new();
    let mut hists: BTreeMap<Labels, BracketStats> = BTreeMap::new();
    for (k, s) in &snap.brackets {
        let event = ("event", events.name(k.event.into()).to_string());
        let blockable = ("blockable", (k.flags & key_flags::BLOCKABLE != 0).to_string());
        let mut l = cgroup(k.flags, k.cgroup_id);
        l.push(event);
        hists.entry(l.clone()).or_default().merge(s);
        l.extend([cause(k.cause), blockable]);
        *counts.entry(l).or_default() += s.count;
    }
    // Tracepoint mode: KVM callback counts, no event type.
    for (k, n) in &snap.kvm_unmaps {
        let mut l = cgroup(k.flags, k.cgroup_id);
        l.extend([("event", "unknown".to_string()), cause(k.cause), ("blockable", "unknown".to_string())]);
        *counts.entry(l).or_default() += n;
    }
    vec![
        families::counter(
            "mmuscope_invalidations_total",
            help("mmuscope_invalidations_total"),
            counts.into_iter().map(|(l, n)| (l, n as f64)),
        ),
        families::histogram(
            "mmuscope_invalidation_duration_seconds",
            help("mmuscope_invalidation_duration_seconds"),
            hists.into_iter().map(|(labels, s)| HistogramRow {
                labels,
                buckets: histogram::cumulative_seconds(&s),
                sum: s.sum_ns as f64 / 1e9,
                count: s.count,
            }),
        ),
    ]
}

fn cause(raw: u32) -> (&'static str, String) {
    ("cause", Cause::from_raw(raw).label().to_string())
}

#[cfg(test)]
mod tests {
    use mmuscope_abi::{BracketKey, KvmUnmapKey};

    use super::*;

    /// The series of `f` with exactly these labels.
    fn series<'a>(f: &'a MetricFamily, want: &[(&str, &str)]) -> Option<&'a prometheus::proto::Metric> {
        f.get_metric().iter().find(|m| {
            let l: Vec<(&str, &str)> = m.get_label().iter().map(|p| (p.name(), p.value())).collect();
            l == want
        })
    }

    #[test]
    fn ids_sharing_a_label_are_summed_and_events_named_from_btf() {
        let key = |cgroup_id, event, flags, cause: Cause| BracketKey {
            cgroup_id,
            event,
            flags,
            cause: cause as u32,
            _pad: 0,
        };
        let snap = Snapshot {
            brackets: vec![
                (key(10, 1, key_flags::BLOCKABLE, Cause::Madvise), BracketStats::of(&[100, 3000])),
                (key(11, 1, key_flags::BLOCKABLE, Cause::Madvise), BracketStats::of(&[5000])), // same label as 10
                (key(10, 1, key_flags::BLOCKABLE, Cause::ThpSplit), BracketStats::of(&[400])),
                (key(10, 0, 0, Cause::Munmap), BracketStats::of(&[70])),
            ],
            kvm_unmaps: vec![(KvmUnmapKey { cgroup_id: 12, flags: 0, cause: Cause::PageFault as u32 }, 7)],
            ..Default::default()
        };
        let events = EventNames::from_pairs(vec![(0, "unmap".into()), (1, "clear".into())]);
        let cgroup = |_flags: u32, id: u64| -> Labels {
            vec![("cgroup", if id == 12 { "/kvm".to_string() } else { "/a".to_string() })]
        };
        let fams = families(&snap, &cgroup, &events);
        for f in &fams {
            assert!(super::super::FAMILIES.iter().any(|(n, _)| *n == f.name()), "{} has no help entry", f.name());
        }
        let count = |labels: &[(&str, &str)]| series(&fams[0], labels).map(|m| m.get_counter().get_value());
        let clear = [("cgroup", "/a"), ("event", "clear")];
        assert_eq!(count(&[clear[0], clear[1], ("cause", "madvise"), ("blockable", "true")]), Some(3.0));
        assert_eq!(count(&[clear[0], clear[1], ("cause", "thp_split"), ("blockable", "true")]), Some(1.0));
        assert_eq!(
            count(&[("cgroup", "/a"), ("event", "unmap"), ("cause", "munmap"), ("blockable", "false")]),
            Some(1.0)
        );
        assert_eq!(
            count(&[("cgroup", "/kvm"), ("event", "unknown"), ("cause", "page_fault"), ("blockable", "unknown")]),
            Some(7.0)
        );
        assert_eq!(fams[0].get_metric().len(), 4);
        // The histogram has no cause label: both causes of the clear brackets are in one series.
        let h = series(&fams[1], &clear).unwrap().get_histogram();
        assert_eq!(h.get_sample_count(), 4);
        assert_eq!(h.get_sample_sum(), 8500e-9);
        assert_eq!(h.get_bucket().last().unwrap().cumulative_count(), 4);
    }
}
