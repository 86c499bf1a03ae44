//! Secondary-TLB invalidations and double notifications.

use std::collections::BTreeMap;

use mmuscope_abi::{Context, DoubleKind, Scope};
use prometheus::proto::MetricFamily;

use super::{
    families::{Labels, counter},
    help::help,
};
use crate::collect::Snapshot;

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
pub fn families(snap: &Snapshot, cgroup: &dyn Fn(u32, u64) -> Labels, attached: bool) -> Vec<MetricFamily> {
    if !attached {
        return Vec::new();
    }
    let mut calls: BTreeMap<Labels, u64> = BTreeMap::new();
    for (k, v) in &snap.secondary {
        let mut l = cgroup(k.flags, k.cgroup_id);
        l.push(("scope", scope_label(k.scope).to_string()));
        l.push(("context", context_label(k.context).to_string()));
        *calls.entry(l).or_default() += v.count;
    }
    let mut doubles: BTreeMap<Labels, (u64, u64)> = BTreeMap::new();
    let mut avoided: BTreeMap<Labels, u64> = BTreeMap::new();
    for (k, v) in &snap.doubles {
        let l = cgroup(k.flags, k.cgroup_id);
        match DoubleKind::from_u32(k.kind) {
            Some(DoubleKind::Avoided) => *avoided.entry(l).or_default() += v.count,
            Some(kind) => {
                let mut l = l;
                l.push(("kind", kind.label().to_string()));
                let e = doubles.entry(l).or_default();
                e.0 += v.count;
                e.1 += v.bytes;
            }
            None => {}
        }
    }
    vec![
        counter(
            "mmuscope_secondary_tlb_invalidations_total",
            help("mmuscope_secondary_tlb_invalidations_total"),
            calls.into_iter().map(|(l, n)| (l, n as f64)),
        ),
        counter(
            "mmuscope_double_notifications_total",
            help("mmuscope_double_notifications_total"),
            doubles.iter().map(|(l, (n, _))| (l.clone(), *n as f64)),
        ),
        counter(
            "mmuscope_redundant_invalidation_bytes_total",
            help("mmuscope_redundant_invalidation_bytes_total"),
            doubles.iter().map(|(l, (_, b))| (l.clone(), *b as f64)),
        ),
        counter(
            "mmuscope_double_notifications_avoided_total",
            help("mmuscope_double_notifications_avoided_total"),
            avoided.into_iter().map(|(l, n)| (l, n as f64)),
        ),
    ]
}
