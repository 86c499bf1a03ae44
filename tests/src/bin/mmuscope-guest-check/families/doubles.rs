//! `mmuscope_double_notifications_total` and `mmuscope_redundant_invalidation_bytes_total` by `kind`, and
//! `mmuscope_double_notifications_avoided_total` (the truth's `avoided_only_end`), for every kind the truth lists on
//! this kernel's API — zero included, where the kernel source says "none". The `kind` label is closed: a kind the
//! truth does not list must not grow. A truth without the part (`None`) makes no statement (not closed). Where the
//! kernel decides a figure at run time, the truth bounds it and the check passes anything within the bound.

use mmuscope_tests::truth::{DoubleKind, GroundTruth, SecondaryTlbApi};

use super::{Check, Closed, Expectations, wire};

pub const DOUBLES: &str = "mmuscope_double_notifications_total";
pub const REDUNDANT_BYTES: &str = "mmuscope_redundant_invalidation_bytes_total";
pub const AVOIDED: &str = "mmuscope_double_notifications_avoided_total";

pub fn expect(truth: &GroundTruth, owner: &str, api: SecondaryTlbApi, out: &mut Expectations) {
    let Some(doubles) = &truth.double_notifications else { return };
    let mut avoided = Check::new(AVOIDED, owner, &[], 0);
    for (kind, total) in doubles.expected(api) {
        if kind == DoubleKind::AvoidedOnlyEnd {
            avoided = Check::new(AVOIDED, owner, &[], total.count).up_to(total.count_max);
            continue;
        }
        let kind = wire(&kind);
        out.checks.push(Check::new(DOUBLES, owner, &[("kind", &kind)], total.count).up_to(total.count_max));
        out.checks.push(Check::new(REDUNDANT_BYTES, owner, &[("kind", &kind)], total.bytes).up_to(total.bytes_max));
    }
    // Not listed: none avoided, like every kind not listed.
    out.checks.push(avoided);
    for metric in [DOUBLES, REDUNDANT_BYTES] {
        out.closed.push(Closed { metric, cgroup: owner.to_owned(), label: "kind" });
    }
}
