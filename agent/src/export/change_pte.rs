//! `change_pte` notifications (kernels that still have them), inside and outside a bracket.

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot};

pub const NOTIFICATIONS: Metric = Metric::per_cgroup(
    "mmuscope_change_pte_notifications_total",
    Kind::Counter,
    &["context"],
    "change_pte notifications (kernels that still have them, e.g. 6.1: KSM merges, write-fault copies), by owner \
     memory cgroup and context: bracket (inside an invalidation of the same mm, where KVM ignores them) or outside. \
     See docs/probes.md.",
);
pub const METRICS: &[&Metric] = &[&NOTIFICATIONS];

/// Left out when the family did not attach (always on kernels without the notification, which was removed in 2024:
/// 6.12 has none), so "0" always means "watched, none".
pub fn families<'a>(snap: &Snapshot, cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>, attached: bool) -> Vec<Family<'a>> {
    if !attached {
        return Vec::new();
    }
    let mut notifications = Family::new(&NOTIFICATIONS);
    for (k, v) in &snap.change_pte {
        let labels = Some(cgroup(k.flags, k.cgroup_id));
        notifications.add(labels, &["bracket"], Value::Count(v.bracket));
        notifications.add(labels, &["outside"], Value::Count(v.outside));
    }
    vec![notifications]
}
