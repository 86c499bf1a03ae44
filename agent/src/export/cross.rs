//! Invalidations of memory owned by one cgroup but started by a kernel thread or by a task of
//! another cgroup (reclaim, compaction, khugepaged, process_madvise).

use std::collections::BTreeMap;

use mmuscope_abi::Initiator;
use prometheus::proto::MetricFamily;

use super::{
    families::{Labels, counter},
    help::help,
};
use crate::collect::Snapshot;

/// Left out when the bracket family runs on tracepoints, which do not know the mm's owner.
pub fn families(snap: &Snapshot, cgroup: &dyn Fn(u32, u64) -> Labels, owner_known: bool) -> Vec<MetricFamily> {
    if !owner_known {
        return Vec::new();
    }
    let mut rows: BTreeMap<Labels, u64> = BTreeMap::new();
    for (k, n) in &snap.cross {
        let initiator = if k.initiator == Initiator::Kthread as u32 { "kthread" } else { "other_cgroup" };
        let mut l = cgroup(k.flags, k.cgroup_id);
        l.push(("initiator", initiator.to_string()));
        *rows.entry(l).or_default() += n;
    }
    let name = "mmuscope_cross_cgroup_invalidations_total";
    vec![counter(name, help(name), rows.into_iter().map(|(l, n)| (l, n as f64)))]
}
