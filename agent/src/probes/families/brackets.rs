//! The bracket family: `invalidate_range_start` → `_end` per owner memory cgroup and event, with latency.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Fallback, Family, FamilyId, Hook, Need, ProgramSpec, Traced, TracedHook},
};

pub const START: &str = "__mmu_notifier_invalidate_range_start";
pub const END: &str = "__mmu_notifier_invalidate_range_end";

/// What the KVM tracepoint alternatives cannot tell.
const KVM_ONLY: &str =
    "KVM subscribers only, one count per VM per bracket, current task's cgroup, no event type, no latency";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("brackets");

pub static BRACKETS: Family = Family {
    id: ID,
    description: "invalidate_range_start → _end brackets per owner memory cgroup and event, with latency",
    required: true,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            Need::Function(START),
            Need::Function(END),
            Need::FexitArity(START, 1),
            Need::Fields(FieldGroup::NotifierRange),
            Need::Fields(FieldGroup::NotifierOps),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::TaskCgroup),
        ],
        hooks: &[TracedHook::entry_and_exit("bracket_start", START), TracedHook::exit_with_args("bracket_end", END)],
        kprobe_degraded: "higher per-event cost",
    },
    fallbacks: &[
        Fallback {
            name: "tp_btf",
            needs: &[Need::BtfTracepoint("kvm_unmap_hva_range"), Need::Fields(FieldGroup::TaskCgroup)],
            programs: &[ProgramSpec::new("kvm_unmap_tp_btf", Hook::TpBtf, "kvm_unmap_hva_range")],
            degraded: KVM_ONLY,
        },
        Fallback {
            name: "tracepoint",
            needs: &[Need::TracefsEvent("kvm", "kvm_unmap_hva_range"), Need::Fields(FieldGroup::TaskCgroup)],
            programs: &[ProgramSpec::new("kvm_unmap_tracepoint", Hook::Tracepoint, "kvm:kvm_unmap_hva_range")],
            degraded: KVM_ONLY,
        },
    ],
};
