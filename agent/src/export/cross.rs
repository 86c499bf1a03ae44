//! Invalidations of memory owned by one cgroup but started by a kernel thread or by a task of
//! another cgroup (reclaim, compaction, khugepaged, process_madvise).

use mmuscope_abi::Initiator;

use super::series::{Family, Kind, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

/// Left out when the bracket family runs on tracepoints, which do not know the mm's owner.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    owner_known: bool,
) -> Vec<Family<'a>> {
    if !owner_known {
        return Vec::new();
    }
    let mut f = Family::per_cgroup("mmuscope_cross_cgroup_invalidations_total", Kind::Counter, &["initiator"]);
    for (k, n) in &snap.cross {
        let initiator = if k.initiator == Initiator::Kthread as u32 { "kthread" } else { "other_cgroup" };
        f.add(Some(cgroup(k.flags, k.cgroup_id)), &[initiator], Value::Count(*n));
    }
    vec![f]
}
