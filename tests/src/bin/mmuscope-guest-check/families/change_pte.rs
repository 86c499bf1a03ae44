//! `mmuscope_change_pte_notifications_total` by `context`, for the owner: on kernels that still notify `change_pte`
//! (the truth has the part only where BTF has `__mmu_notifier_change_pte`), every notification the scenario's
//! kernel paths make, inside a bracket or not. Any other context that grows is a mismatch.

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Closed, Expectations};

pub const CHANGE_PTE: &str = "mmuscope_change_pte_notifications_total";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    let Some(c) = &truth.change_pte else { return };
    out.checks.push(Check::new(CHANGE_PTE, owner, &[("context", "bracket")], c.bracket));
    out.checks.push(Check::new(CHANGE_PTE, owner, &[("context", "outside")], c.outside));
    out.closed.push(Closed { metric: CHANGE_PTE, cgroup: owner.to_owned(), label: "context" });
}
