//! The change_pte family: `change_pte` notifications per owner cgroup, and how many arrived inside a bracket of the
//! same mm (the wasted ones). The entry point and `set_pte_at_notify` were removed in 2024 (the matrix's 6.1 has
//! them, 6.12 not); there the family is unavailable for lack of the function, never an error.

use super::brackets;
use crate::{
    kernel::FieldGroup,
    probes::spec::{Family, FamilyId, Need, Traced, TracedHook},
};

/// `set_pte_at_notify`'s call into the notifier list, for an mm with subscriptions.
const CHANGE_PTE: &str = "__mmu_notifier_change_pte";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("change_pte");

pub static CHANGE_PTE_FAMILY: Family = Family {
    id: ID,
    description: "change_pte notifications (older kernels) per owner cgroup, inside and outside a bracket",
    required: false,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            // The bracket context comes from the bracket programs' per-thread stack.
            Need::SameModeAs(brackets::ID),
            Need::Function(CHANGE_PTE),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::TaskCgroup),
        ],
        hooks: &[TracedHook::entry("change_pte", CHANGE_PTE)],
        kprobe_degraded: "higher per-event cost",
    },
    // No tracepoint marks a change_pte notification.
    fallbacks: &[],
};
