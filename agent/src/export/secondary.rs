//! Secondary-TLB invalidations and double notifications.

use mmuscope_abi::{Context, DoubleKind, Scope};

use super::series::{Family, Kind, Metric, Value};
use crate::{cgroups::CgroupLabels, collect::Snapshot, subscribers};

pub const INVALIDATIONS: Metric = Metric::per_cgroup(
    "mmuscope_secondary_tlb_invalidations_total",
    Kind::Counter,
    &["scope", "context"],
    "Secondary-TLB invalidations that reach a subscriber implementing the callback (none for KVM on 6.6+), by owner \
     memory cgroup, scope (range or full_mm) and context (bracket, gather, outside). Hooked functions: docs/probes.md.",
);
pub const DOUBLES: Metric = Metric::per_cgroup(
    "mmuscope_double_notifications_total",
    Kind::Counter,
    &["kind", subscribers::LABEL],
    "Secondary-TLB ranges invalidated again within one operation, by owner memory cgroup, mechanism \
     (end_after_in_lock, end_then_gather, overlapping_secondary_tlb, overlapping_brackets) and subscriber kinds \
     reached; see docs/probes.md.",
);
pub const REDUNDANT_BYTES: Metric = Metric::per_cgroup(
    "mmuscope_redundant_invalidation_bytes_total",
    Kind::Counter,
    &["kind", subscribers::LABEL],
    "Bytes invalidated more than once, by mechanism (see double_notifications_total).",
);
pub const AVOIDED: Metric = Metric::per_cgroup(
    "mmuscope_double_notifications_avoided_total",
    Kind::Counter,
    &[subscribers::LABEL],
    "invalidate_range_end calls with only_end set (pre-6.6), which skip the repeated ->invalidate_range.",
);
pub const METRICS: &[&Metric] = &[&INVALIDATIONS, &DOUBLES, &REDUNDANT_BYTES, &AVOIDED];

fn scope_label(v: u8) -> &'static str {
    if v == Scope::FullMm as u8 { "full_mm" } else { "range" }
}

fn context_label(v: u8) -> &'static str {
    match v {
        x if x == Context::Bracket as u8 => "bracket",
        x if x == Context::Gather as u8 => "gather",
        _ => "outside",
    }
}

/// Left out entirely when the family is not attached, so "0" always means "watched, none".
/// `subscriber(mask)` names a double's subscriber mask.
pub fn families<'a>(
    snap: &Snapshot,
    cgroup: &dyn Fn(u32, u64) -> CgroupLabels<'a>,
    subscriber: &dyn Fn(u32) -> &'a str,
    attached: bool,
) -> Vec<Family<'a>> {
    if !attached {
        return Vec::new();
    }
    let mut calls = Family::new(&INVALIDATIONS);
    for (k, v) in &snap.secondary {
        let labels = [scope_label(k.scope), context_label(k.context)];
        calls.add(Some(cgroup(k.flags, k.cgroup_id)), &labels, Value::Count(v.count));
    }
    let mut doubles = Family::new(&DOUBLES);
    let mut bytes = Family::new(&REDUNDANT_BYTES);
    let mut avoided = Family::new(&AVOIDED);
    for (k, v) in &snap.doubles {
        let (labels, reached) = (Some(cgroup(k.flags, k.cgroup_id)), subscriber(k.subscribers));
        match DoubleKind::from_u32(k.kind) {
            Some(DoubleKind::Avoided) => avoided.add(labels, &[reached], Value::Count(v.count)),
            Some(kind) => {
                doubles.add(labels, &[kind.label(), reached], Value::Count(v.count));
                bytes.add(labels, &[kind.label(), reached], Value::Count(v.bytes));
            }
            None => {}
        }
    }
    vec![calls, doubles, bytes, avoided]
}
