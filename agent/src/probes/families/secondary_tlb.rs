//! The secondary-TLB family: `arch_invalidate_secondary_tlbs` (6.6+) or `->invalidate_range` (before) by scope and
//! context, and the double notifications among them.

use super::brackets::END;
use crate::{
    kernel::FieldGroup,
    probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec},
};

/// The secondary-TLB entry point: 6.6+ name first, the pre-6.6 one otherwise (same arguments).
const SECONDARY: &str = "__mmu_notifier_arch_invalidate_secondary_tlbs|__mmu_notifier_invalidate_range";
const GATHER: &str = "tlb_gather_mmu";
const GATHER_END: &str = "tlb_finish_mmu";
/// Pre-6.6 only: `_end(range, only_end)` tells whether `_end` repeats `->invalidate_range`.
const ONLY_END: Option<Need> = Some(Need::Arity(END, 2));

pub static SECONDARY_TLB: Family = Family {
    id: FamilyId::SecondaryTlb,
    description: "secondary-TLB invalidations by scope and context, and double notifications",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::SameModeAs(FamilyId::Brackets),
                Need::Function(SECONDARY),
                Need::Function(GATHER),
                Need::Function(GATHER_END),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "secondary_fentry", hook: Hook::FEntry, target: SECONDARY, when: None },
                ProgramSpec { program: "secondary_end_fentry", hook: Hook::FEntry, target: END, when: ONLY_END },
                ProgramSpec { program: "gather_open_fentry", hook: Hook::FEntry, target: GATHER, when: None },
                ProgramSpec { program: "gather_close_fexit", hook: Hook::FExit, target: GATHER_END, when: None },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::SameModeAs(FamilyId::Brackets),
                Need::Function(SECONDARY),
                Need::Function(GATHER),
                Need::Function(GATHER_END),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "secondary_kprobe", hook: Hook::KProbe, target: SECONDARY, when: None },
                ProgramSpec { program: "secondary_end_kprobe", hook: Hook::KProbe, target: END, when: ONLY_END },
                ProgramSpec { program: "gather_open_kprobe", hook: Hook::KProbe, target: GATHER, when: None },
                ProgramSpec {
                    program: "gather_close_kretprobe",
                    hook: Hook::KRetProbe,
                    target: GATHER_END,
                    when: None,
                },
            ],
            degraded: "higher per-event cost",
        },
    ],
};
