//! Expected secondary-TLB notifications and double notifications. These differ between kernel generations, so every
//! entry says which generation it is for, named by the observable kernel API (never by a version number):
//!
//! * [`SecondaryTlbApi::InvalidateRange`]: BTF has `__mmu_notifier_invalidate_range` (kernels before 6.6);
//! * [`SecondaryTlbApi::ArchInvalidateSecondaryTlbs`]: BTF has `__mmu_notifier_arch_invalidate_secondary_tlbs` (6.6+).
//!
//! A scenario that has these parts lists, per generation, every double kind and every secondary-TLB context that can
//! occur — with a zero count where the kernel source says "none"; any other kind or context must stay at zero (the
//! vm tier's guest check closes both label sets). Where the kernel decides a figure at run time (young bits, the
//! page tables a munmap frees), the source bounds it and its `cause` says why no exact value can be known. A
//! scenario without the part (`None`) makes no statement about it.
//!
//! One thing BTF cannot show is how x86's `flush_tlb_mm_range` passes a range above its flush ceiling to the
//! secondary-TLB notifier (the whole mm on 6.12, the range itself on 7.2): that scope is keyed by kernel series
//! (the workload's `kernel_api::flush_scope`), and left open on a series nobody read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The kernel's secondary-TLB notification API (same names as the agent's `generation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondaryTlbApi {
    /// `->invalidate_range`, called under the page-table lock and again from `invalidate_range_end` unless
    /// `only_end` (before 6.6).
    InvalidateRange,
    /// `->arch_invalidate_secondary_tlbs`, called from the architecture's TLB flush (6.6 and later).
    ArchInvalidateSecondaryTlbs,
}

impl SecondaryTlbApi {
    pub const ALL: [Self; 2] = [Self::InvalidateRange, Self::ArchInvalidateSecondaryTlbs];
}

/// The `kind` label of `double_notifications_total`, plus the avoided case (`double_notifications_avoided_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DoubleKind {
    /// Pre-6.6: `->invalidate_range` inside the page-table lock, then again from a plain `invalidate_range_end`.
    EndAfterInLock,
    /// Pre-6.6: `->invalidate_range` from a plain `invalidate_range_end`, then again from the TLB-gather flush
    /// (`tlb_flush_mmu_tlbonly`) of the same window over the same range.
    EndThenGather,
    /// 6.6+: overlapping `arch_invalidate_secondary_tlbs` ranges within one bracket or TLB-gather window, for an mm
    /// with a subscriber that implements that callback.
    OverlappingSecondaryTlb,
    /// Both: brackets on the same mm within one operation whose ranges overlap (start/end subscribers).
    OverlappingBrackets,
    /// Pre-6.6: a bracket closed with `mmu_notifier_invalidate_range_only_end` (the double that was avoided).
    AvoidedOnlyEnd,
}

/// Count and redundant bytes of one kind. Exact unless a source bounds them (`count_max`/`bytes_max` above
/// `count`/`bytes`: the kernel decides at run time, see that source's `cause`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindTotal {
    pub count: u64,
    pub bytes: u64,
    pub count_max: u64,
    pub bytes_max: u64,
}

/// One mechanism that produces (or avoids) double notifications, explained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoubleSource {
    pub kind: DoubleKind,
    pub count: u64,
    /// Redundantly invalidated bytes (0 for [`DoubleKind::AvoidedOnlyEnd`]).
    pub redundant_bytes: u64,
    /// `None`: every generation; otherwise only kernels with this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<SecondaryTlbApi>,
    /// Upper bounds where the exact figure is decided at run time (then `count` and `redundant_bytes` are the lower
    /// bounds, and `cause` says why no exact value can be known); `None`: exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<KindBound>,
    pub cause: String,
    /// The kernel source this follows from (functions and the decisive lines, per generation).
    pub kernel_path: String,
}

/// The largest count and redundant bytes a bounded [`DoubleSource`] can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindBound {
    pub count: u64,
    pub redundant_bytes: u64,
}

impl DoubleSource {
    pub fn new(
        kind: DoubleKind,
        count: u64,
        redundant_bytes: u64,
        api: Option<SecondaryTlbApi>,
        cause: &str,
        kernel_path: &str,
    ) -> Self {
        Self {
            kind,
            count,
            redundant_bytes,
            api,
            at_most: None,
            cause: cause.to_owned(),
            kernel_path: kernel_path.to_owned(),
        }
    }

    /// This source with upper bounds (`count` and `redundant_bytes` become the lower ones).
    pub fn at_most(self, count: u64, redundant_bytes: u64) -> Self {
        Self { at_most: Some(KindBound { count, redundant_bytes }), ..self }
    }
}

/// Expected double notifications of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoubleNotificationTruth {
    pub sources: Vec<DoubleSource>,
}

impl DoubleNotificationTruth {
    /// Totals per kind for a kernel with `api`; only the kinds the scenario specifies for it appear.
    pub fn expected(&self, api: SecondaryTlbApi) -> BTreeMap<DoubleKind, KindTotal> {
        let mut out: BTreeMap<DoubleKind, KindTotal> = BTreeMap::new();
        for s in self.sources.iter().filter(|s| s.api.is_none_or(|a| a == api)) {
            let t = out.entry(s.kind).or_default();
            t.count += s.count;
            t.bytes += s.redundant_bytes;
            let max = s.at_most.unwrap_or(KindBound { count: s.count, redundant_bytes: s.redundant_bytes });
            t.count_max += max.count;
            t.bytes_max += max.redundant_bytes;
        }
        out
    }

    /// These doubles where `api`'s secondary-TLB calls reach no subscriber that implements them: the agent sees no
    /// call, so no `overlapping_secondary_tlb` double made of them (the kinds made of brackets stay).
    pub fn unreached(mut self, api: SecondaryTlbApi, why: &str) -> Self {
        let made_of_calls = |s: &DoubleSource| s.kind == DoubleKind::OverlappingSecondaryTlb && s.api == Some(api);
        for s in self.sources.iter_mut().filter(|s| made_of_calls(s)) {
            s.count = 0;
            s.redundant_bytes = 0;
            s.at_most = s.at_most.map(|_| KindBound { count: 0, redundant_bytes: 0 });
            s.cause = format!("{}; reaches no implementer: {why}", s.cause);
        }
        self
    }
}

/// Where a secondary-TLB invalidation happened (the `context` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlbContext {
    /// Inside an `invalidate_range_start` … `_end` bracket of the same mm on the same thread.
    Bracket,
    /// Inside a `tlb_gather_mmu` … `tlb_finish_mmu` window but outside a bracket.
    Gather,
    Outside,
}

/// Scope of one secondary-TLB invalidation (the `scope` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlbScope {
    Range,
    /// `(0, ~0UL)`: the whole address space.
    FullMm,
}

/// Secondary-TLB invalidations delivered for one mechanism: calls of the entry point
/// (`__mmu_notifier_invalidate_range` / `__mmu_notifier_arch_invalidate_secondary_tlbs`) and, before 6.6, the
/// `->invalidate_range` call a plain `invalidate_range_end` makes itself for a subscriber that implements it
/// (counted in the bracket's context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryTlbSource {
    pub api: SecondaryTlbApi,
    pub context: TlbContext,
    /// `None` when the kernel decides at run time (e.g. x86 batched flush → full mm, direct flush → range).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<TlbScope>,
    pub count: u64,
    /// Upper bound where the count is decided at run time (`count` is then the lower bound, and `cause` says why
    /// no exact value can be known); `None`: `count` is exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_max: Option<u64>,
    /// Bytes covered, where `scope` is [`TlbScope::Range`]; `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub cause: String,
    pub kernel_path: String,
}

impl SecondaryTlbSource {
    /// An exact count (no upper bound) of calls of `scope`; `range_bytes` is kept for [`TlbScope::Range`] only, the
    /// one scope whose bytes the agent counts.
    pub fn exact(
        api: SecondaryTlbApi,
        context: TlbContext,
        scope: Option<TlbScope>,
        count: u64,
        range_bytes: u64,
        cause: &str,
        kernel_path: &str,
    ) -> Self {
        Self {
            api,
            context,
            scope,
            count,
            count_max: None,
            bytes: (scope == Some(TlbScope::Range)).then_some(range_bytes),
            cause: cause.to_owned(),
            kernel_path: kernel_path.to_owned(),
        }
    }
}

/// Expected secondary-TLB invalidations of a run: the (api, context) pairs listed, and none in any other context
/// of that API (an empty list: no secondary-TLB call reaches a subscriber).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondaryTlbTruth {
    pub sources: Vec<SecondaryTlbSource>,
}

impl SecondaryTlbTruth {
    /// Total count per context for `api` (only contexts the scenario specifies appear).
    pub fn expected(&self, api: SecondaryTlbApi) -> BTreeMap<TlbContext, u64> {
        let mut out = BTreeMap::new();
        for s in self.sources.iter().filter(|s| s.api == api) {
            *out.entry(s.context).or_insert(0) += s.count;
        }
        out
    }

    /// The same calls on an mm where no subscriber implements `api`'s callback (KVM from 6.6): the agent counts only
    /// calls that reach an implementer, so none of them. Each source keeps its mechanism and says why it is 0.
    pub fn unreached(mut self, api: SecondaryTlbApi, why: &str) -> Self {
        for s in self.sources.iter_mut().filter(|s| s.api == api) {
            s.count = 0;
            s.count_max = s.count_max.map(|_| 0);
            s.bytes = s.bytes.map(|_| 0);
            s.cause = format!("{}; reaches no implementer: {why}", s.cause);
        }
        self
    }
}
