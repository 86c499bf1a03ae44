//! The secondary-TLB family: `arch_invalidate_secondary_tlbs` (6.6+) or `->invalidate_range` (before) by scope and
//! context, and the double notifications among them.

use super::brackets::{self, END};
use crate::{
    kernel::FieldGroup,
    probes::spec::{Family, FamilyId, Need, Traced, TracedHook},
};

/// The secondary-TLB entry point: 6.6+ name first, the pre-6.6 one otherwise (same arguments).
const SECONDARY: &str = "__mmu_notifier_arch_invalidate_secondary_tlbs|__mmu_notifier_invalidate_range";
const GATHER: &str = "tlb_gather_mmu";
const GATHER_END: &str = "tlb_finish_mmu";
/// Pre-6.6 only: `_end(range, only_end)` tells whether `_end` repeats `->invalidate_range`.
const ONLY_END: Need = Need::Arity(END, 2);

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("secondary_tlb");

pub static SECONDARY_TLB: Family = Family {
    id: ID,
    description: "secondary-TLB invalidations by scope and context, and double notifications",
    required: false,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            Need::SameModeAs(brackets::ID),
            Need::Function(SECONDARY),
            Need::Function(GATHER),
            Need::Function(GATHER_END),
            Need::Fields(FieldGroup::NotifierOps),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::TaskCgroup),
        ],
        hooks: &[
            TracedHook::entry("secondary", SECONDARY),
            TracedHook::entry("secondary_end", END).when(ONLY_END),
            // Every unmap of every process: attached only while some mm has subscriptions (`probes::arming`).
            // `secondary`/`secondary_end` run only for mms with subscriptions and stay attached.
            TracedHook::entry("gather_open", GATHER).while_subscribed(),
            TracedHook::exit("gather_close", GATHER_END).while_subscribed(),
        ],
        kprobe_degraded: "higher per-event cost",
    },
    fallbacks: &[],
};
