//! `mmuscope_cross_cgroup_invalidations_total` by `initiator`, for the owner: the brackets of sources another
//! process started (`cross_cgroup`), and none otherwise — every other source of every scenario is the workload's
//! own process in the owner cgroup, so any initiator that grows is a mismatch.

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Closed, Expectations};

pub const CROSS_CGROUP: &str = "mmuscope_cross_cgroup_invalidations_total";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    if let Some(c) = &truth.cross_cgroup {
        out.checks.push(Check::new(CROSS_CGROUP, owner, &[("initiator", &c.initiator_kind)], c.invalidations));
    }
    out.closed.push(Closed { metric: CROSS_CGROUP, cgroup: owner.to_owned(), label: "initiator" });
}
