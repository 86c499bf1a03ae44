//! `notifier_subscriptions{subscriber}` and `pinned_mms{cgroup}` from the last subscriber
//! inventory (see `crate::subscribers` for when it is re-swept).

use std::collections::BTreeMap;

use mmuscope_abi::BracketStats;
use prometheus::proto::MetricFamily;

use super::{
    families::{HistogramRow, Labels, gauge, histogram},
    help::help,
    histogram as buckets,
};
use crate::subscribers::Inventory;

pub fn families(inv: &Inventory, cgroup: &dyn Fn(u32, u64) -> Labels) -> Vec<MetricFamily> {
    let mut kinds: BTreeMap<String, u64> = inv.kinds_seen.iter().map(|k| (k.clone(), 0)).collect();
    let mut pinned: BTreeMap<Labels, u64> = BTreeMap::new();
    for mm in &inv.mms {
        for s in &mm.subscriptions {
            *kinds.entry(s.kind.clone()).or_default() += 1;
        }
        if mm.pinned_pages > 0 {
            *pinned.entry(cgroup(mm.cgroup_flags, mm.cgroup_id)).or_default() += 1;
        }
    }
    let name = "mmuscope_notifier_subscriptions";
    let kinds = kinds.into_iter().map(|(k, n)| (vec![("subscriber", k)], n as f64));
    let subs = gauge(name, help(name), kinds);
    let name = "mmuscope_pinned_mms";
    vec![subs, gauge(name, help(name), pinned.into_iter().map(|(l, n)| (l, n as f64)))]
}

/// `subscriber_callback_duration_seconds{subscriber,callback}`, same log2 buckets as the bracket histogram.
pub fn callback_family(stats: &BTreeMap<(String, &'static str), BracketStats>) -> MetricFamily {
    let name = "mmuscope_subscriber_callback_duration_seconds";
    let rows = stats.iter().map(|((subscriber, callback), s)| HistogramRow {
        labels: vec![("subscriber", subscriber.clone()), ("callback", callback.to_string())],
        buckets: buckets::cumulative_seconds(s),
        sum: s.sum_ns as f64 / 1e9,
        count: s.count,
    });
    histogram(name, help(name), rows)
}

/// One KVM subscription on a pinned mm, so the metrics reference shows both families with their labels.
pub fn sample_inventory() -> Inventory {
    use crate::subscribers::{MmEntry, Subscription};
    let kvm = Subscription { kind: "kvm".into(), interval: false, callbacks: Vec::new() };
    let mm = MmEntry {
        pid: 1,
        comm: "qemu".into(),
        cgroup_id: 1,
        cgroup_flags: 0,
        pinned_pages: 1,
        subscriptions: vec![kvm],
        truncated: false,
    };
    Inventory { mms: vec![mm], ..Default::default() }
}
