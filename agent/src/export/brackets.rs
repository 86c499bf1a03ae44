//! Invalidation-bracket families: `invalidations_total`, `invalidation_duration_seconds` and, host-wide by cause,
//! `invalidation_cause_duration_seconds`.

use mmuscope_abi::{Cause, key_flags};

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot, kernel::EventNames, subscribers};

pub const INVALIDATIONS: Metric = Metric::per_cgroup(
    "mmuscope_invalidations_total",
    Kind::Counter,
    &["event", "cause", "blockable", subscribers::LABEL],
    "Completed mmu_notifier invalidation brackets, by owner memory cgroup, event type, cause, blockable and the \
     subscriber kinds reached (kvm, a module, + joined). Tracepoint mode: KVM's kvm_unmap_hva_range events, \
     event and blockable unknown.",
);
pub const DURATION: Metric = Metric::per_cgroup(
    "mmuscope_invalidation_duration_seconds",
    Kind::Histogram,
    &["event", subscribers::LABEL],
    "Time from __mmu_notifier_invalidate_range_start entry to __mmu_notifier_invalidate_range_end return, by owner \
     memory cgroup, event type and the subscriber kinds reached (fentry and kprobe modes).",
);
/// The per-cgroup histogram has no cause label (cgroups × events × causes × buckets would be too many series);
/// this one answers "how long do THP-split (reclaim, migration …) invalidations take" for the whole host.
pub const DURATION_BY_CAUSE: Metric = Metric::plain(
    "mmuscope_invalidation_cause_duration_seconds",
    Kind::Histogram,
    &["cause"],
    "Time from __mmu_notifier_invalidate_range_start entry to __mmu_notifier_invalidate_range_end return, by cause, \
     over all cgroups (fentry and kprobe modes).",
);
pub const METRICS: &[&Metric] = &[&INVALIDATIONS, &DURATION, &DURATION_BY_CAUSE];

/// `cgroup(flags, id)` gives the cgroup labels of a key, `subscriber(mask)` the label of its subscriber mask.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    subscriber: &dyn Fn(u32) -> &'a str,
    events: &'a EventNames,
) -> Vec<Family<'a>> {
    let mut counts = Family::new(&INVALIDATIONS);
    let mut hists = Family::new(&DURATION);
    let mut by_cause = Family::new(&DURATION_BY_CAUSE);
    // Several ids can share labels (e.g. "unknown", or "other"): the families sum their series.
    for (k, s) in &snap.brackets {
        let (labels, event) = (cgroup(k.flags, k.cgroup_id), events.name(k.event.into()));
        let reached = subscriber(k.subscribers);
        hists.add(Some(labels), &[event, reached], Value::Histogram(Box::new(*s)));
        by_cause.add(None, &[cause(k.cause)], Value::Histogram(Box::new(*s)));
        let blockable = if k.flags & key_flags::BLOCKABLE != 0 { "true" } else { "false" };
        counts.add(Some(labels), &[event, cause(k.cause), blockable, reached], Value::Count(s.count));
    }
    // Tracepoint mode: KVM callback counts, no event type.
    for (k, n) in &snap.kvm_unmaps {
        let own = ["unknown", cause(k.cause), "unknown", subscribers::KVM];
        counts.add(Some(cgroup(k.flags, k.cgroup_id)), &own, Value::Count(*n));
    }
    vec![counts, hists, by_cause]
}

fn cause(raw: u32) -> &'static str {
    Cause::from_raw(raw).label()
}

#[cfg(test)]
mod tests {
    use mmuscope_abi::{BracketKey, BracketStats, KvmUnmapKey};

    use super::*;

    #[test]
    fn ids_sharing_a_label_are_summed_and_events_named_from_btf() {
        let key = |cgroup_id, event, flags, cause: Cause| BracketKey {
            cgroup_id,
            event,
            flags,
            cause: cause as u32,
            subscribers: if cgroup_id == 11 { 0b11 } else { 0b1 },
        };
        let snap = Snapshot {
            brackets: vec![
                (key(10, 1, key_flags::BLOCKABLE, Cause::Madvise), BracketStats::of(&[100, 3000])),
                (key(11, 1, key_flags::BLOCKABLE, Cause::Madvise), BracketStats::of(&[5000])), // same label as 10
                (key(10, 1, key_flags::BLOCKABLE, Cause::ThpSplit), BracketStats::of(&[400])),
                (key(10, 0, 0, Cause::Munmap), BracketStats::of(&[70])),
            ],
            kvm_unmaps: vec![(KvmUnmapKey { cgroup_id: 12, flags: 0, cause: Cause::PageFault as u32 }, 7)],
            ..Default::default()
        };
        let events = EventNames::from_pairs(vec![(0, "unmap".into()), (1, "clear".into())]);
        let cgroup = |_flags: u32, id: u64| CgroupLabels::new(if id == 12 { "/kvm" } else { "/a" }, "", "", "");
        let subscriber = |mask: u32| if mask == 0b1 { "kvm" } else { "kvm+mmuscope_mirror" };
        let mut fams = families(&snap, &cgroup, &subscriber, &events);
        let mut count = |cgroup: &str, own: &[&str]| fams[0].value(Some(cgroup), own).cloned();
        assert_eq!(count("/a", &["clear", "madvise", "true", "kvm"]), Some(Value::Count(2)));
        assert_eq!(count("/a", &["clear", "madvise", "true", "kvm+mmuscope_mirror"]), Some(Value::Count(1)));
        assert_eq!(count("/a", &["clear", "thp_split", "true", "kvm"]), Some(Value::Count(1)));
        assert_eq!(count("/a", &["unmap", "munmap", "false", "kvm"]), Some(Value::Count(1)));
        // Tracepoint mode counts KVM's own events.
        assert_eq!(count("/kvm", &["unknown", "page_fault", "unknown", "kvm"]), Some(Value::Count(7)));
        assert_eq!(fams[0].series().len(), 5);
        // The histogram has no cause label: both causes of the clear brackets are in one series per subscriber.
        let Some(Value::Histogram(h)) = fams[1].value(Some("/a"), &["clear", "kvm"]) else { panic!("no histogram") };
        assert_eq!((h.count, h.sum_ns), (3, 3500));
        // By cause, all cgroups together: madvise from cgroups 10 and 11, THP split and munmap apart.
        let mut by_cause = |cause: &str| match fams[2].value(None, &[cause]) {
            Some(Value::Histogram(h)) => Some((h.count, h.sum_ns)),
            _ => None,
        };
        assert_eq!(by_cause("madvise"), Some((3, 8100)));
        assert_eq!(by_cause("thp_split"), Some((1, 400)));
        assert_eq!(by_cause("munmap"), Some((1, 70)));
        assert_eq!(by_cause("page_fault"), None, "tracepoint-mode counts have no duration");
    }
}
