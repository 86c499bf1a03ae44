//! Fork copies of pinned pages: copies, bytes, THP splits and forks that copied anything.

use super::series::{Family, Kind, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

/// `page_size` converts copies (order-0 pages) to bytes; `splits_observable` is false in
/// tracepoint mode, where no split hook exists and the family is left out rather than zero.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    page_size: u64,
    splits_observable: bool,
) -> Vec<Family<'a>> {
    let family = |name| Family::per_cgroup(name, Kind::Counter, &[]);
    let mut copies = family("mmuscope_fork_pinned_page_copies_total");
    let mut bytes = family("mmuscope_fork_pinned_copy_bytes_total");
    let mut forks = family("mmuscope_forks_with_pinned_pages_total");
    let mut splits = family("mmuscope_fork_pinned_thp_splits_total");
    for (k, s) in &snap.forks {
        let labels = Some(cgroup(k.flags, k.cgroup_id));
        copies.add(labels, &[], Value::Count(s.copies));
        bytes.add(labels, &[], Value::Count(s.copies * page_size));
        forks.add(labels, &[], Value::Count(s.forks_with_copies));
        splits.add(labels, &[], Value::Count(s.thp_splits));
    }
    let mut out = vec![copies, bytes, forks];
    if splits_observable {
        out.push(splits);
    }
    out
}
