//! `mmuscope_secondary_tlb_invalidations_total` by `context` (and `scope` where the truth fixes it), for the contexts
//! the truth specifies on this kernel's API. Contexts it does not list are unspecified (e.g. the gather flush of
//! `madvise_pageout`, which depends on young bits), so not asserted. Where the test module's secondary-TLB
//! subscriber was the mm's subscriber, its own counts are compared too: every call it received, over all contexts,
//! and those over the whole address space.

use std::collections::BTreeMap;

use mmuscope_tests::truth::{GroundTruth, SecondaryTlbApi, TlbContext, TlbScope};

use super::{Check, Expectations, wire};

pub const SECONDARY_TLB: &str = "mmuscope_secondary_tlb_invalidations_total";

pub fn expect(truth: &GroundTruth, owner: &str, api: SecondaryTlbApi, out: &mut Expectations) {
    if let Some(module) = truth.tlb_subscriber.as_ref().filter(|m| m.api == api) {
        out.checks.push(Check::new(SECONDARY_TLB, owner, &[], module.calls));
        out.checks.push(Check::new(SECONDARY_TLB, owner, &[("scope", "full_mm")], module.full_mm));
    }
    let Some(tlb) = &truth.secondary_tlb else { return };
    // Per context: per scope when every source of the context fixes its scope, else the context's total.
    let mut by_context: BTreeMap<TlbContext, Vec<(Option<TlbScope>, u64)>> = BTreeMap::new();
    for s in tlb.sources.iter().filter(|s| s.api == api) {
        by_context.entry(s.context).or_default().push((s.scope, s.count));
    }
    for (context, sources) in by_context {
        let context = wire(&context);
        if sources.iter().all(|(scope, _)| scope.is_some()) {
            let mut by_scope: BTreeMap<String, u64> = BTreeMap::new();
            for (scope, n) in sources {
                *by_scope.entry(wire(&scope)).or_default() += n;
            }
            for (scope, n) in by_scope {
                out.checks.push(Check::new(SECONDARY_TLB, owner, &[("context", &context), ("scope", &scope)], n));
            }
        } else {
            let n = sources.iter().map(|(_, n)| n).sum();
            out.checks.push(Check::new(SECONDARY_TLB, owner, &[("context", &context)], n));
        }
    }
}
