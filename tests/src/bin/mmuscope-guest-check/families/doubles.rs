//! `mmuscope_double_notifications_total` and `mmuscope_redundant_invalidation_bytes_total` by `kind`, and
//! `mmuscope_double_notifications_avoided_total` (the truth's `avoided_only_end`), for every kind the truth specifies
//! on this kernel's API — zero included, where the kernel source says "none". Kinds it does not list are
//! unspecified, so not asserted.

use mmuscope_tests::truth::{DoubleKind, GroundTruth, SecondaryTlbApi};

use super::{Check, Expectations, wire};

pub const DOUBLES: &str = "mmuscope_double_notifications_total";
pub const REDUNDANT_BYTES: &str = "mmuscope_redundant_invalidation_bytes_total";
pub const AVOIDED: &str = "mmuscope_double_notifications_avoided_total";

pub fn expect(truth: &GroundTruth, owner: &str, api: SecondaryTlbApi, out: &mut Expectations) {
    let Some(doubles) = &truth.double_notifications else { return };
    for (kind, total) in doubles.expected(api) {
        if kind == DoubleKind::AvoidedOnlyEnd {
            out.checks.push(Check::new(AVOIDED, owner, &[], total.count));
            continue;
        }
        let kind = wire(&kind);
        out.checks.push(Check::new(DOUBLES, owner, &[("kind", &kind)], total.count));
        out.checks.push(Check::new(REDUNDANT_BYTES, owner, &[("kind", &kind)], total.bytes));
    }
}
