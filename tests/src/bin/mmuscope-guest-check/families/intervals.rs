//! Interval-notifier families. The KVM and fork scenarios register no interval notifier, so no bracket reaches an
//! interval subscriber, no reader waits and no `hmm_range_fault` collides: the families must stay at zero for the
//! cgroup. `mirror-collide` registers one (the project's HMM mirror module) and its truth — what the module counted —
//! gives every figure: brackets that hit the interval, readers that waited (the counter and the wait histogram's
//! count), read collisions (the module marks each reading task when it is invalidated), `hmm_range_fault` -EBUSY. Brackets of the same mm that miss the interval are in none of these figures and
//! in none of the bracket family's either (`brackets::expect` compares every event exactly, over a closed `event`
//! label), so each one the agent counted shows there as a mismatch. Read retries are inline in the driver and have no
//! agent family: noted (the workload holds the module to `retries + -EBUSY <= read collisions`). A subscriber whose truth cannot say its
//! read collisions (rxe ODP: `read_collisions` is `None`) gets no statement about them. Where reader waits and
//! -EBUSY depend on timing (`collisions_timed`: `rdma-odp --concurrent`), the trace reference counts them and the
//! agent's figures must equal its counts (`compare::trace_problems`).

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Expectations};

pub const INTERVAL_HITS: &str = "mmuscope_interval_invalidations_total";
pub const INTERVAL_WAITS: &str = "mmuscope_interval_read_waits_total";
pub const INTERVAL_WAIT_COUNT: &str = "mmuscope_interval_read_wait_seconds_count";
pub const HMM_BUSY: &str = "mmuscope_hmm_range_fault_busy_total";
pub const READ_COLLISIONS: &str = "mmuscope_interval_read_collisions_total";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    let Some(interval) = &truth.interval else {
        for metric in [INTERVAL_HITS, INTERVAL_WAITS, READ_COLLISIONS, HMM_BUSY] {
            out.checks.push(Check::new(metric, owner, &[], 0));
        }
        return;
    };
    out.checks.push(Check::new(INTERVAL_HITS, owner, &[], interval.invalidations));
    if interval.collisions_timed {
        out.notes.push(
            "interval: reader waits and hmm_range_fault -EBUSY depend on timing the workload cannot know: compared \
             with the trace reference's counts instead (its rows)"
                .to_owned(),
        );
    } else {
        out.checks.push(Check::new(INTERVAL_WAITS, owner, &[], interval.read_waits));
        out.checks.push(Check::new(INTERVAL_WAIT_COUNT, owner, &[], interval.read_waits));
        out.checks.push(Check::new(HMM_BUSY, owner, &[], interval.hmm_busy));
    }
    let retries = match interval.read_collisions {
        Some(collisions) => {
            out.checks.push(Check::new(READ_COLLISIONS, owner, &[], collisions));
            format!("{} read retries (module-counted, <= the {collisions} read collisions)", interval.read_retries)
        }
        None => format!("{} read retries and no read-collision truth (not compared)", interval.read_retries),
    };
    out.notes.push(format!(
        "interval: {} brackets on the same mm missed the interval ({} of them while an invalidation of it was held): \
         in no figure; {retries}: retries have no agent family to compare with",
        interval.misses, interval.concurrent_misses
    ));
}
