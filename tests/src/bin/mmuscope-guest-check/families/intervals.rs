//! Interval-notifier families: every scenario's process registers KVM's classic `mmu_notifier` and no interval
//! notifier, so no bracket reaches an interval subscriber, no reader waits and no `hmm_range_fault` collides — the
//! families must stay at zero for its cgroup while their probes are attached (checked in `plan`).

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Expectations};

pub const INTERVAL_HITS: &str = "mmuscope_interval_invalidations_total";
pub const INTERVAL_WAITS: &str = "mmuscope_interval_read_waits_total";
pub const HMM_BUSY: &str = "mmuscope_hmm_range_fault_busy_total";

pub fn expect(_truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    for metric in [INTERVAL_HITS, INTERVAL_WAITS, HMM_BUSY] {
        out.checks.push(Check::new(metric, owner, &[], 0));
    }
}
