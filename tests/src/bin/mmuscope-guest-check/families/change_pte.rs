//! `mmuscope_change_pte_notifications_total` by `context`, for the owner: on kernels that still notify `change_pte`
//! (the truth has the part only where BTF has `__mmu_notifier_change_pte`), every notification the scenario's
//! kernel paths make, inside a bracket or not. Any other context that grows is a mismatch. In fentry mode on a kernel
//! whose BPF trampolines take no struct argument by value (before 6.1: BTF's `struct btf_func_model` has no
//! `arg_flags`), the family cannot attach — `__mmu_notifier_change_pte`'s third argument is a `pte_t` — and must count
//! nothing ([`unobservable`]).

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Closed, Expectations};

pub const CHANGE_PTE: &str = "mmuscope_change_pte_notifications_total";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    let Some(c) = &truth.change_pte else { return };
    out.checks.push(Check::new(CHANGE_PTE, owner, &[("context", "bracket")], c.bracket));
    out.checks.push(Check::new(CHANGE_PTE, owner, &[("context", "outside")], c.outside));
    out.closed.push(Closed { metric: CHANGE_PTE, cgroup: owner.to_owned(), label: "context" });
}

/// The family cannot attach in this mode on this kernel (see the module docs): the agent must count 0 in every
/// context, and the truth's notifications are noted, not asserted.
pub fn unobservable(truth: &GroundTruth, out: &mut Expectations) {
    let Some(c) = &truth.change_pte else { return };
    for check in out.checks.iter_mut().filter(|check| check.metric == CHANGE_PTE) {
        check.expected = 0;
        check.max = None;
    }
    out.notes.push(format!(
        "change_pte: {} notifications in a bracket, {} outside (truth) not observable in fentry mode here: the \
         trampolines take no struct argument (BTF: no btf_func_model.arg_flags) and __mmu_notifier_change_pte \
         takes a pte_t; the family stays unattached and must count 0",
        c.bracket, c.outside
    ));
}
