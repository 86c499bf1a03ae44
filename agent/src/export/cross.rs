//! Invalidations of memory owned by one cgroup but started by a kernel thread or by a task of
//! another cgroup (reclaim, compaction, khugepaged, process_madvise).

use mmuscope_abi::Initiator;

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

pub const CROSS_CGROUP: Metric = Metric::per_cgroup(
    "mmuscope_cross_cgroup_invalidations_total",
    Kind::Counter,
    &["initiator"],
    "Invalidation brackets on memory owned by this cgroup but started by a kernel thread (initiator=kthread) or by a \
     task of another memory cgroup (initiator=other_cgroup). fentry and kprobe modes.",
);
pub const METRICS: &[&Metric] = &[&CROSS_CGROUP];

/// Left out when the bracket family runs on tracepoints, which do not know the mm's owner.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    owner_known: bool,
) -> Vec<Family<'a>> {
    if !owner_known {
        return Vec::new();
    }
    let mut f = Family::new(&CROSS_CGROUP);
    for (k, n) in &snap.cross {
        let initiator = if k.initiator == Initiator::Kthread as u32 { "kthread" } else { "other_cgroup" };
        f.add(Some(cgroup(k.flags, k.cgroup_id)), &[initiator], Value::Count(*n));
    }
    vec![f]
}
