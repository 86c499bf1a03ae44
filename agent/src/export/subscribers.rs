//! `notifier_subscriptions{subscriber}`, `pinned_mms{cgroup}` and `has_pinned_mms{cgroup}` from the last subscriber
//! inventory (see `crate::subscribers` for when it is re-swept).

use std::collections::BTreeMap;

use mmuscope_abi::BracketStats;

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, probes::spec::OnDemand, subscribers::Inventory};

pub const SUBSCRIPTIONS: Metric = Metric::plain(
    "mmuscope_notifier_subscriptions",
    Kind::Gauge,
    &["subscriber"],
    "Registered mmu_notifier subscriptions by subscriber (from the callback symbols, e.g. kvm = one per VM; one per \
     interval notifier, at most 128 per mm: see subscriber_inventory_truncated_mms). From the task-iterator inventory.",
);
pub const TRUNCATED_MMS: Metric = Metric::plain(
    "mmuscope_subscriber_inventory_truncated_mms",
    Kind::Gauge,
    &["list"],
    "Address spaces the inventory lists only in part: list=notifiers, more than 16 classic mmu_notifiers; \
     list=intervals, more than 128 interval notifiers (or a tree it could not walk). Their subscriptions count short.",
);
pub const PINNED_MMS: Metric = Metric::per_cgroup(
    "mmuscope_pinned_mms",
    Kind::Gauge,
    &[],
    "Address spaces with pages pinned long-term now (mm->pinned_vm > 0: io_uring fixed buffers, RDMA, vDPA; not VFIO \
     type1 or iommufd), by owner memory cgroup. From the task-iterator inventory.",
);
pub const HAS_PINNED_MMS: Metric = Metric::per_cgroup(
    "mmuscope_has_pinned_mms",
    Kind::Gauge,
    &[],
    "Address spaces flagged has-pinned (MMF_HAS_PINNED): a page was pinned while they lived (VFIO included), so \
     fork() copies their maybe-pinned pages eagerly. Sticky. By owner memory cgroup, from the inventory.",
);
pub const CALLBACK_DURATION: Metric = Metric::plain(
    "mmuscope_subscriber_callback_duration_seconds",
    Kind::Histogram,
    &["subscriber", "callback"],
    "Time spent in each subscriber's invalidation callbacks, by subscriber (from the callback symbol, e.g. kvm) and \
     callback. kprobes on the callbacks met at start-up (later: --probes.late-callbacks); none without kprobes.",
);
pub const HOOKS_ATTACHED: Metric = Metric::plain(
    "mmuscope_on_demand_hooks_attached",
    Kind::Gauge,
    &["group"],
    "1 while a group of on-demand hooks is attached: fork_copy (while some mm has the has-pinned flag), \
     subscriptions (while some mm has notifier subscriptions). Kept for good with --probes.keep-attached.",
);
pub const METRICS: &[&Metric] =
    &[&CALLBACK_DURATION, &SUBSCRIPTIONS, &TRUNCATED_MMS, &PINNED_MMS, &HAS_PINNED_MMS, &HOOKS_ATTACHED];

pub fn families<'a>(inv: &'a Inventory, cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>) -> Vec<Family<'a>> {
    let mut subscriptions = Family::new(&SUBSCRIPTIONS);
    // Every kind seen since start has a series, 0 while none is subscribed.
    for kind in &inv.kinds_seen {
        subscriptions.add(None, &[kind], Value::Count(0));
    }
    // Both lists have a series, 0 while every mm is listed whole.
    let mut truncated = Family::new(&TRUNCATED_MMS);
    truncated.add(None, &["notifiers"], Value::Count(inv.mms.iter().filter(|m| m.truncated).count() as u64));
    let intervals_truncated = inv.mms.iter().filter(|m| m.intervals_truncated).count();
    truncated.add(None, &["intervals"], Value::Count(intervals_truncated as u64));
    let mut pinned = Family::new(&PINNED_MMS);
    let mut has_pinned = Family::new(&HAS_PINNED_MMS);
    for mm in &inv.mms {
        for s in &mm.subscriptions {
            subscriptions.add(None, &[&s.kind], Value::Count(1));
        }
        if mm.pinned_pages > 0 {
            pinned.add(Some(cgroup(mm.cgroup_flags, mm.cgroup_id)), &[], Value::Count(1));
        }
        if mm.has_pinned {
            has_pinned.add(Some(cgroup(mm.cgroup_flags, mm.cgroup_id)), &[], Value::Count(1));
        }
    }
    let mut hook = Family::new(&HOOKS_ATTACHED);
    for (group, view) in
        [(OnDemand::WhilePinned, &inv.fork_copy_hook), (OnDemand::WhileSubscribed, &inv.subscription_hooks)]
    {
        hook.add(None, &[group.name()], Value::Count(u64::from(view.attached)));
    }
    vec![subscriptions, truncated, pinned, has_pinned, hook]
}

/// `subscriber_callback_duration_seconds{subscriber,callback}`, same log2 buckets as the bracket histogram.
pub fn callback_family<'a>(stats: &'a BTreeMap<(String, &'static str), BracketStats>) -> Family<'a> {
    let mut f = Family::new(&CALLBACK_DURATION);
    for ((subscriber, callback), s) in stats {
        f.add(None, &[subscriber, callback], Value::Histogram(Box::new(*s)));
    }
    f
}

/// One KVM subscription on a pinned mm, so the metrics reference shows the families with their labels.
pub fn sample_inventory() -> Inventory {
    use crate::subscribers::{MmEntry, Subscription};
    let kvm = Subscription { kind: "kvm".into(), interval: None, callbacks: Vec::new() };
    let mm = MmEntry {
        pid: 1,
        comm: "qemu".into(),
        cgroup_id: 1,
        cgroup_flags: 0,
        pinned_pages: 1,
        has_pinned: true,
        subscriptions: vec![kvm],
        truncated: false,
        intervals_truncated: false,
    };
    Inventory { mms: vec![mm], ..Default::default() }
}
