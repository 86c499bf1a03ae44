//! `mmuscope_invalidations_total` and `mmuscope_invalidation_duration_seconds_count` by `event`: one per bracket,
//! for the owner of the memory (the truth lists every event; any other event is a mismatch). Brackets another
//! process started (`initiator_pid`) belong to the owner too in fentry/kprobe modes (mm → owner → memory cgroup).
//!
//! Each carries the `subscriber` the workload registered on its mm ([`super::subscriber`]; closed), or, where the
//! truth splits the brackets by subscriber (`subscribers`), each value's own count.
//!
//! `multi-vm`: fentry/kprobe modes see the bracket once, however many VMs are registered; the per-VM
//! `kvm:kvm_unmap_hva_range` count (`invalidations.kvm_unmap_hva_range`) is what tracepoint mode counts (host tier).

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Closed, Expectations, SUBSCRIBER, wire};

pub const INVALIDATIONS: &str = "mmuscope_invalidations_total";
pub const HIST_COUNT: &str = "mmuscope_invalidation_duration_seconds_count";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    let reached = super::subscriber(truth);
    for metric in [INVALIDATIONS, HIST_COUNT] {
        for (event, n) in &truth.invalidations.brackets {
            let event = wire(event);
            let mut labels = vec![("event", event.as_str())];
            labels.extend(reached.as_deref().map(|s| (SUBSCRIBER, s)));
            out.checks.push(Check::new(metric, owner, &labels, *n));
        }
        out.closed.push(Closed { metric, cgroup: owner.to_owned(), label: "event" });
        if reached.is_some() {
            out.closed.push(Closed { metric, cgroup: owner.to_owned(), label: SUBSCRIBER });
        }
    }
    if let Some(split) = &truth.subscribers {
        for (subscriber, n) in &split.brackets {
            out.checks.push(Check::new(INVALIDATIONS, owner, &[(SUBSCRIBER, subscriber)], *n));
            out.checks.push(Check::new(HIST_COUNT, owner, &[(SUBSCRIBER, subscriber)], *n));
        }
        for metric in [INVALIDATIONS, HIST_COUNT] {
            out.closed.push(Closed { metric, cgroup: owner.to_owned(), label: SUBSCRIBER });
        }
    }
    if truth.vms > 1 {
        out.notes.push(format!(
            "{} VMs: kvm_unmap_hva_range {} (per VM per bracket) is a tracepoint-mode figure, not observable here",
            truth.vms, truth.invalidations.kvm_unmap_hva_range
        ));
    }
}
