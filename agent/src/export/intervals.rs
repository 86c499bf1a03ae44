//! Interval-notifier families: reader waits (count and histogram, per subscriber), brackets
//! that reached interval subscribers, and `hmm_range_fault` collisions.

use std::collections::BTreeMap;

use mmuscope_abi::BracketStats;
use prometheus::proto::MetricFamily;

use super::{
    families::{self, HistogramRow, Labels, counter},
    help::help,
    histogram,
};
use crate::collect::Snapshot;

const WAITS: &str = "mmuscope_interval_read_waits_total";
const WAIT_SECONDS: &str = "mmuscope_interval_read_wait_seconds";
const HITS: &str = "mmuscope_interval_invalidations_total";
const BUSY: &str = "mmuscope_hmm_range_fault_busy_total";

/// What attached: the reader/hmm programs (`readers`) and the bracket programs that see
/// `invalidate_seq` (`hits`). A family whose programs did not attach is left out.
pub struct Attached {
    pub readers: bool,
    pub hits: bool,
}

/// `symbol(addr)` names a subscriber's `ops->invalidate` callback.
pub fn families(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> Labels,
    symbol: &dyn Fn(u64) -> String,
    attached: Attached,
) -> Vec<MetricFamily> {
    let mut out = Vec::new();
    if attached.readers {
        let mut waits: BTreeMap<Labels, BracketStats> = BTreeMap::new();
        for (k, s) in &snap.interval_waits {
            let mut l = cgroup(k.flags, k.cgroup_id);
            l.push(("subscriber", symbol(k.invalidate_fn)));
            waits.entry(l).or_default().merge(s);
        }
        out.push(counter(WAITS, help(WAITS), waits.iter().map(|(l, s)| (l.clone(), s.count as f64))));
        out.push(families::histogram(
            WAIT_SECONDS,
            help(WAIT_SECONDS),
            waits.into_iter().map(|(labels, s)| HistogramRow {
                labels,
                buckets: histogram::cumulative_seconds(&s),
                sum: s.sum_ns as f64 / 1e9,
                count: s.count,
            }),
        ));
        out.push(counter(BUSY, help(BUSY), per_cgroup(&snap.hmm_busy, cgroup)));
    }
    if attached.hits {
        out.push(counter(HITS, help(HITS), per_cgroup(&snap.interval_hits, cgroup)));
    }
    out
}

fn per_cgroup(
    rows: &[(mmuscope_abi::CgroupKey, u64)],
    cgroup: &dyn Fn(u32, u64) -> Labels,
) -> impl Iterator<Item = (Labels, f64)> {
    let mut sums: BTreeMap<Labels, u64> = BTreeMap::new();
    for (k, n) in rows {
        *sums.entry(cgroup(k.flags, k.cgroup_id)).or_default() += n;
    }
    sums.into_iter().map(|(l, n)| (l, n as f64))
}

#[cfg(test)]
mod tests {
    use mmuscope_abi::{CgroupKey, IntervalKey};

    use super::*;

    #[test]
    fn waits_are_counted_and_timed_per_cgroup_and_subscriber() {
        let key = |cgroup_id, invalidate_fn| IntervalKey { cgroup_id, flags: 0, _pad: 0, invalidate_fn };
        let snap = Snapshot {
            interval_waits: vec![
                (key(1, 0xa0), BracketStats::of(&[1000, 3000])),
                (key(2, 0xa0), BracketStats::of(&[500])), // same cgroup label as 1
                (key(1, 0xb0), BracketStats::of(&[70])),
            ],
            interval_hits: vec![(CgroupKey { cgroup_id: 1, flags: 0, _pad: 0 }, 9)],
            ..Default::default()
        };
        let cgroup = |_: u32, _: u64| -> Labels { vec![("cgroup", "/gpu".to_string())] };
        let symbol = |a: u64| if a == 0xa0 { "amdgpu_hmm_invalidate_gfx".to_string() } else { "unknown".to_string() };
        let fams = families(&snap, &cgroup, &symbol, Attached { readers: true, hits: true });
        let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
        assert_eq!(names, [WAITS, WAIT_SECONDS, BUSY, HITS]);
        let waits = &fams[0].get_metric();
        assert_eq!(waits.len(), 2);
        let gfx = waits.iter().find(|m| m.get_label()[1].value() == "amdgpu_hmm_invalidate_gfx").unwrap();
        assert_eq!(gfx.get_counter().get_value(), 3.0);
        assert_eq!(fams[1].get_metric()[0].get_histogram().get_sample_sum(), 4500e-9);
        assert!(fams[2].get_metric().is_empty());
        assert_eq!(fams[3].get_metric()[0].get_counter().get_value(), 9.0);
        assert!(families(&snap, &cgroup, &symbol, Attached { readers: false, hits: false }).is_empty());
    }
}
