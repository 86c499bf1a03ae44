//! `mmuscope_secondary_tlb_invalidations_total` by `context` (and `scope` where the truth fixes it). The truth lists
//! every context that can occur on this kernel's API, so the `context` label is closed: any other context that
//! grows is a mismatch. A truth without the part (`None`) makes no statement (not closed). Where the kernel decides
//! the count at run time (e.g. the gather flush of `madvise_pageout`, which depends on young bits), the truth gives
//! a bound and the check passes anything within it.
//! Where the test module's secondary-TLB subscriber was the mm's subscriber, its own counts are compared too: every
//! call it received, over all contexts, and those over the whole address space.

use std::collections::BTreeMap;

use mmuscope_tests::truth::{GroundTruth, SecondaryTlbApi, TlbContext, TlbScope};

use super::{Check, Closed, Expectations, wire};

pub const SECONDARY_TLB: &str = "mmuscope_secondary_tlb_invalidations_total";

/// Lower and upper bound of a count (equal when exact).
type Bounds = (u64, u64);

pub fn expect(truth: &GroundTruth, owner: &str, api: SecondaryTlbApi, out: &mut Expectations) {
    if let Some(module) = truth.tlb_subscriber.as_ref().filter(|m| m.api == api) {
        out.checks.push(Check::new(SECONDARY_TLB, owner, &[], module.calls));
        out.checks.push(Check::new(SECONDARY_TLB, owner, &[("scope", "full_mm")], module.full_mm));
    }
    let Some(tlb) = &truth.secondary_tlb else { return };
    out.closed.push(Closed { metric: SECONDARY_TLB, cgroup: owner.to_owned(), label: "context" });
    // Per context: per scope when every source of the context fixes its scope, else the context's total.
    let mut by_context: BTreeMap<TlbContext, Vec<(Option<TlbScope>, Bounds)>> = BTreeMap::new();
    for s in tlb.sources.iter().filter(|s| s.api == api) {
        by_context.entry(s.context).or_default().push((s.scope, (s.count, s.count_max.unwrap_or(s.count))));
    }
    let sum = |it: &mut dyn Iterator<Item = Bounds>| it.fold((0, 0), |(a, b), (x, y)| (a + x, b + y));
    for (context, sources) in by_context {
        let context = wire(&context);
        if sources.iter().all(|(scope, _)| scope.is_some()) {
            let mut by_scope: BTreeMap<String, Vec<Bounds>> = BTreeMap::new();
            for (scope, n) in sources {
                by_scope.entry(wire(&scope)).or_default().push(n);
            }
            for (scope, n) in by_scope {
                let (lo, hi) = sum(&mut n.into_iter());
                out.checks
                    .push(Check::new(SECONDARY_TLB, owner, &[("context", &context), ("scope", &scope)], lo).up_to(hi));
            }
        } else {
            let (lo, hi) = sum(&mut sources.into_iter().map(|(_, n)| n));
            out.checks.push(Check::new(SECONDARY_TLB, owner, &[("context", &context)], lo).up_to(hi));
        }
    }
}
