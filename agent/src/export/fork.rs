//! Fork copies of pinned pages: copies, bytes, THP splits and forks that copied anything.

use std::collections::BTreeMap;

use mmuscope_abi::ForkStats;
use prometheus::proto::MetricFamily;

use super::{
    families::{Labels, counter},
    help::help,
};
use crate::collect::Snapshot;

/// `page_size` converts copies (order-0 pages) to bytes; `splits_observable` is false in
/// tracepoint mode, where no split hook exists and the family is left out rather than zero.
pub fn families(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> Labels,
    page_size: u64,
    splits_observable: bool,
) -> Vec<MetricFamily> {
    let mut by_labels: BTreeMap<Labels, ForkStats> = BTreeMap::new();
    for (k, s) in &snap.forks {
        let t = by_labels.entry(cgroup(k.flags, k.cgroup_id)).or_default();
        t.forks += s.forks;
        t.forks_with_copies += s.forks_with_copies;
        t.copies += s.copies;
        t.thp_splits += s.thp_splits;
    }
    let rows = |f: fn(&ForkStats) -> u64| -> Vec<(Labels, f64)> {
        by_labels.iter().map(|(l, s)| (l.clone(), f(s) as f64)).collect()
    };
    let family = |name: &str, f: fn(&ForkStats) -> u64| counter(name, help(name), rows(f));
    let mut out = vec![
        family("mmuscope_fork_pinned_page_copies_total", |s| s.copies),
        counter(
            "mmuscope_fork_pinned_copy_bytes_total",
            help("mmuscope_fork_pinned_copy_bytes_total"),
            by_labels.iter().map(|(l, s)| (l.clone(), (s.copies * page_size) as f64)),
        ),
        family("mmuscope_forks_with_pinned_pages_total", |s| s.forks_with_copies),
    ];
    if splits_observable {
        out.push(family("mmuscope_fork_pinned_thp_splits_total", |s| s.thp_splits));
    }
    out
}
