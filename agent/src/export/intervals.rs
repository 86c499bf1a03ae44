//! Interval-notifier families: reader waits (count and histogram, per subscriber), read collisions (per subscriber),
//! brackets that reached interval subscribers, and `hmm_range_fault` collisions.

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

pub const WAITS: Metric = Metric::per_cgroup(
    "mmuscope_interval_read_waits_total",
    Kind::Counter,
    &["subscriber"],
    "mmu_interval_read_begin calls (GPU/RDMA drivers through HMM) that had to wait for an invalidation in flight, by \
     owner memory cgroup and subscriber (the notifier's ops->invalidate symbol). fentry and kprobe modes.",
);
pub const WAIT_SECONDS: Metric = Metric::per_cgroup(
    "mmuscope_interval_read_wait_seconds",
    Kind::Histogram,
    &["subscriber"],
    "Time those mmu_interval_read_begin calls waited, by owner memory cgroup and subscriber.",
);
pub const COLLISIONS: Metric = Metric::per_cgroup(
    "mmuscope_interval_read_collisions_total",
    Kind::Counter,
    &["subscriber"],
    "mmu_interval_read_begin calls returning another sequence than the thread's previous one on that notifier (it \
     was invalidated since); every driver retry is one, so retries <= this. By owner memory cgroup and subscriber.",
);
pub const BUSY: Metric = Metric::per_cgroup(
    "mmuscope_hmm_range_fault_busy_total",
    Kind::Counter,
    &[],
    "hmm_range_fault calls that returned -EBUSY because an invalidation collided with the fault, by owner memory \
     cgroup (kernels built with HMM).",
);
pub const HITS: Metric = Metric::per_cgroup(
    "mmuscope_interval_invalidations_total",
    Kind::Counter,
    &[],
    "Invalidation brackets that reached at least one interval notifier, by owner memory cgroup. fentry and kprobe \
     modes.",
);
pub const METRICS: &[&Metric] = &[&WAITS, &WAIT_SECONDS, &COLLISIONS, &BUSY, &HITS];

/// What attached: the reader/hmm programs (`readers`) and the bracket programs that see
/// `invalidate_seq` (`hits`). A family whose programs did not attach is left out.
pub struct Attached {
    pub readers: bool,
    pub hits: bool,
}

/// `symbol(addr)` names a subscriber's `ops->invalidate` callback.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    symbol: &dyn Fn(u64) -> &'a str,
    attached: Attached,
) -> Vec<Family<'a>> {
    let mut out = Vec::new();
    if attached.readers {
        let mut waits = Family::new(&WAITS);
        let mut seconds = Family::new(&WAIT_SECONDS);
        for (k, s) in &snap.interval_waits {
            let (labels, subscriber) = (Some(cgroup(k.flags, k.cgroup_id)), symbol(k.invalidate_fn));
            waits.add(labels, &[subscriber], Value::Count(s.count));
            seconds.add(labels, &[subscriber], Value::Histogram(Box::new(*s)));
        }
        let mut collisions = Family::new(&COLLISIONS);
        for (k, n) in &snap.interval_collisions {
            collisions.add(Some(cgroup(k.flags, k.cgroup_id)), &[symbol(k.invalidate_fn)], Value::Count(*n));
        }
        out.extend([waits, seconds, collisions, per_cgroup(&BUSY, &snap.hmm_busy, cgroup)]);
    }
    if attached.hits {
        out.push(per_cgroup(&HITS, &snap.interval_hits, cgroup));
    }
    out
}

fn per_cgroup<'a>(
    metric: &'static Metric,
    rows: &[(mmuscope_abi::CgroupKey, u64)],
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
) -> Family<'a> {
    let mut f = Family::new(metric);
    for (k, n) in rows {
        f.add(Some(cgroup(k.flags, k.cgroup_id)), &[], Value::Count(*n));
    }
    f
}

#[cfg(test)]
mod tests {
    use mmuscope_abi::{BracketStats, CgroupKey, IntervalKey};

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
            interval_collisions: vec![(key(1, 0xa0), 4), (key(1, 0xb0), 1)],
            interval_hits: vec![(CgroupKey { cgroup_id: 1, flags: 0, _pad: 0 }, 9)],
            ..Default::default()
        };
        let cgroup = |_: u32, _: u64| CgroupLabels::new("/gpu", "", "", "");
        let symbol = |a: u64| if a == 0xa0 { "amdgpu_hmm_invalidate_gfx" } else { "unknown" };
        let mut fams = families(&snap, &cgroup, &symbol, Attached { readers: true, hits: true });
        let names: Vec<&str> = fams.iter().map(|f| f.name).collect();
        assert_eq!(names, [WAITS.name, WAIT_SECONDS.name, COLLISIONS.name, BUSY.name, HITS.name]);
        assert_eq!(fams[0].series().len(), 2);
        assert_eq!(fams[0].value(Some("/gpu"), &["amdgpu_hmm_invalidate_gfx"]), Some(&Value::Count(3)));
        let Some(Value::Histogram(h)) = fams[1].value(Some("/gpu"), &["amdgpu_hmm_invalidate_gfx"]) else {
            panic!("no histogram")
        };
        assert_eq!(h.sum_ns, 4500);
        assert_eq!(fams[2].value(Some("/gpu"), &["amdgpu_hmm_invalidate_gfx"]), Some(&Value::Count(4)));
        assert_eq!(fams[2].value(Some("/gpu"), &["unknown"]), Some(&Value::Count(1)));
        assert!(fams[3].is_empty());
        assert_eq!(fams[4].value(Some("/gpu"), &[]), Some(&Value::Count(9)));
        assert!(families(&snap, &cgroup, &symbol, Attached { readers: false, hits: false }).is_empty());
    }
}
