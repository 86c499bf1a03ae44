//! `mmuscope_double_notifications_total` and `mmuscope_redundant_invalidation_bytes_total` by `kind`, and
//! `mmuscope_double_notifications_avoided_total` (the truth's `avoided_only_end`), for every kind the truth lists on
//! this kernel's API — zero included, where the kernel source says "none". The `kind` label is closed: a kind the
//! truth does not list must not grow. A truth without the part (`None`) makes no statement (not closed). Where the
//! kernel decides a figure at run time, the truth bounds it and the check passes anything within the bound. Each
//! carries the truth's `subscriber` (closed): the secondary-TLB implementers a repeated call reached, or the
//! bracket's subscribers for overlapping brackets and avoided calls — one value in every scenario here.

use mmuscope_tests::truth::{DoubleKind, GroundTruth, SecondaryTlbApi};

use super::{Check, Closed, Expectations, SUBSCRIBER, wire};

pub const DOUBLES: &str = "mmuscope_double_notifications_total";
pub const REDUNDANT_BYTES: &str = "mmuscope_redundant_invalidation_bytes_total";
pub const AVOIDED: &str = "mmuscope_double_notifications_avoided_total";

pub fn expect(truth: &GroundTruth, owner: &str, api: SecondaryTlbApi, out: &mut Expectations) {
    let Some(doubles) = &truth.double_notifications else { return };
    let reached = super::subscriber(truth).or_else(|| truth.subscribers.as_ref().map(|s| s.doubles.clone()));
    let check = |metric, kind: Option<&str>, expected| {
        let mut labels: Vec<(&'static str, &str)> = kind.map(|k| ("kind", k)).into_iter().collect();
        labels.extend(reached.as_deref().map(|s| (SUBSCRIBER, s)));
        Check::new(metric, owner, &labels, expected)
    };
    let mut avoided = check(AVOIDED, None, 0);
    for (kind, total) in doubles.expected(api) {
        if kind == DoubleKind::AvoidedOnlyEnd {
            avoided = check(AVOIDED, None, total.count).up_to(total.count_max);
            continue;
        }
        let kind = wire(&kind);
        out.checks.push(check(DOUBLES, Some(&kind), total.count).up_to(total.count_max));
        out.checks.push(check(REDUNDANT_BYTES, Some(&kind), total.bytes).up_to(total.bytes_max));
    }
    // Not listed: none avoided, like every kind not listed.
    out.checks.push(avoided);
    for metric in [DOUBLES, REDUNDANT_BYTES] {
        out.closed.push(Closed { metric, cgroup: owner.to_owned(), label: "kind" });
    }
    if reached.is_some() {
        for metric in [DOUBLES, REDUNDANT_BYTES, AVOIDED] {
            out.closed.push(Closed { metric, cgroup: owner.to_owned(), label: SUBSCRIBER });
        }
    }
}
