//! `mmuscope_invalidations_total` by `cause`: the brackets of every source under the cause its truth names — the
//! caller hook's (e.g. `thp_split`) where the hooks are attached (fentry and kprobe modes), else the context's
//! (the system call). Any other cause that grows is a mismatch.

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Closed, Expectations, brackets::INVALIDATIONS};

pub fn expect(truth: &GroundTruth, owner: &str, hooks: bool, out: &mut Expectations) {
    let Some(causes) = truth.invalidations.brackets_by_cause(hooks) else {
        out.notes.push("the truth names no cause for some of its brackets: causes not compared".into());
        return;
    };
    for (cause, n) in causes {
        out.checks.push(Check::new(INVALIDATIONS, owner, &[("cause", &cause)], n));
    }
    out.closed.push(Closed { metric: INVALIDATIONS, cgroup: owner.to_owned(), label: "cause" });
}
