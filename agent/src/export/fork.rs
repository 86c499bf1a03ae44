//! Fork copies of pinned pages: copies, bytes, THP splits and forks that copied anything.

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

pub const COPIES: Metric = Metric::per_cgroup(
    "mmuscope_fork_pinned_page_copies_total",
    Kind::Counter,
    &[],
    "Pages copied eagerly at fork() because the parent's page may be DMA-pinned (MMF_HAS_PINNED and \
     folio_maybe_dma_pinned), by the parent mm owner's memory cgroup.",
);
pub const BYTES: Metric = Metric::per_cgroup(
    "mmuscope_fork_pinned_copy_bytes_total",
    Kind::Counter,
    &[],
    "Bytes of those eager fork copies.",
);
pub const THP_SPLITS: Metric = Metric::per_cgroup(
    "mmuscope_fork_pinned_thp_splits_total",
    Kind::Counter,
    &[],
    "PMD-mapped THPs split at fork() because they may be pinned (fentry and kprobe modes).",
);
pub const FORKS: Metric = Metric::per_cgroup(
    "mmuscope_forks_with_pinned_pages_total",
    Kind::Counter,
    &[],
    "Address-space copies (fork) that copied at least one maybe-pinned page eagerly.",
);
pub const UNOBSERVED: Metric = Metric::per_cgroup(
    "mmuscope_fork_unobserved_total",
    Kind::Counter,
    &[],
    "Forks of an address space with the has-pinned flag made while the per-page copy hook was detached (none had \
     the flag at the last inventory sweep): their eager copies were not counted. Each one attaches the hook.",
);
pub const METRICS: &[&Metric] = &[&COPIES, &BYTES, &THP_SPLITS, &FORKS, &UNOBSERVED];

/// `page_size` converts copies (order-0 pages) to bytes; `splits_observable` is false in
/// tracepoint mode, where no split hook exists and the family is left out rather than zero.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    page_size: u64,
    splits_observable: bool,
) -> Vec<Family<'a>> {
    let mut copies = Family::new(&COPIES);
    let mut bytes = Family::new(&BYTES);
    let mut forks = Family::new(&FORKS);
    let mut splits = Family::new(&THP_SPLITS);
    let mut unobserved = Family::new(&UNOBSERVED);
    for (k, s) in &snap.forks {
        let labels = Some(cgroup(k.flags, k.cgroup_id));
        copies.add(labels, &[], Value::Count(s.copies));
        bytes.add(labels, &[], Value::Count(s.copies * page_size));
        forks.add(labels, &[], Value::Count(s.forks_with_copies));
        splits.add(labels, &[], Value::Count(s.thp_splits));
        unobserved.add(labels, &[], Value::Count(s.unobserved));
    }
    let mut out = vec![copies, bytes, forks, unobserved];
    if splits_observable {
        out.push(splits);
    }
    out
}
