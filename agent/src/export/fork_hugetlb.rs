//! Fork copies of pinned hugetlb pages: huge pages copied and their bytes.

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

pub const COPIES: Metric = Metric::per_cgroup(
    "mmuscope_fork_pinned_hugetlb_copies_total",
    Kind::Counter,
    &[],
    "Hugetlb pages copied eagerly at fork() because the parent's page may be DMA-pinned, by the parent mm owner's \
     memory cgroup (fentry and kprobe modes).",
);
pub const BYTES: Metric = Metric::per_cgroup(
    "mmuscope_fork_pinned_hugetlb_copy_bytes_total",
    Kind::Counter,
    &[],
    "Bytes of those hugetlb copies (each the size of its huge page).",
);
pub const METRICS: &[&Metric] = &[&COPIES, &BYTES];

/// Left out (rather than zero) when the family's programs did not attach: no tracepoint sees these copies.
pub fn families<'a>(snap: &Snapshot, cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>, attached: bool) -> Vec<Family<'a>> {
    if !attached {
        return Vec::new();
    }
    let mut copies = Family::new(&COPIES);
    let mut bytes = Family::new(&BYTES);
    for (k, s) in &snap.hugetlb_forks {
        let labels = Some(cgroup(k.flags, k.cgroup_id));
        copies.add(labels, &[], Value::Count(s.count));
        bytes.add(labels, &[], Value::Count(s.bytes));
    }
    vec![copies, bytes]
}
