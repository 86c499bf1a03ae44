//! The bracket family: `invalidate_range_start` → `_end` per owner memory cgroup and event, with latency.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec},
};

pub const START: &str = "__mmu_notifier_invalidate_range_start";
pub const END: &str = "__mmu_notifier_invalidate_range_end";

pub static BRACKETS: Family = Family {
    id: FamilyId::Brackets,
    description: "invalidate_range_start → _end brackets per owner memory cgroup and event, with latency",
    required: true,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::Function(START),
                Need::Function(END),
                Need::Arity(START, 1),
                Need::Fields(FieldGroup::NotifierRange),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "bracket_start_fentry", hook: Hook::FEntry, target: START, when: None },
                ProgramSpec { program: "bracket_start_fexit", hook: Hook::FExit, target: START, when: None },
                ProgramSpec { program: "bracket_end_fexit", hook: Hook::FExit, target: END, when: None },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::Function(START),
                Need::Function(END),
                Need::Fields(FieldGroup::NotifierRange),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "bracket_start_kprobe", hook: Hook::KProbe, target: START, when: None },
                ProgramSpec { program: "bracket_start_kretprobe", hook: Hook::KRetProbe, target: START, when: None },
                ProgramSpec { program: "bracket_end_kprobe", hook: Hook::KProbe, target: END, when: None },
                ProgramSpec { program: "bracket_end_kretprobe", hook: Hook::KRetProbe, target: END, when: None },
            ],
            degraded: "higher per-event cost",
        },
        Alternative {
            name: "tp_btf",
            mode: Mode::Tracepoint,
            needs: &[Need::BtfTracepoint("kvm_unmap_hva_range"), Need::Fields(FieldGroup::TaskCgroup)],
            programs: &[ProgramSpec {
                program: "kvm_unmap_tp_btf",
                hook: Hook::TpBtf,
                target: "kvm_unmap_hva_range",
                when: None,
            }],
            degraded: "KVM subscribers only, one count per VM per bracket, current task's cgroup, no event type, no latency",
        },
        Alternative {
            name: "tracepoint",
            mode: Mode::Tracepoint,
            needs: &[Need::TracefsEvent("kvm", "kvm_unmap_hva_range"), Need::Fields(FieldGroup::TaskCgroup)],
            programs: &[tp("kvm_unmap_tracepoint", "kvm:kvm_unmap_hva_range")],
            degraded: "KVM subscribers only, one count per VM per bracket, current task's cgroup, no event type, no latency",
        },
    ],
};

const fn tp(program: &'static str, target: &'static str) -> ProgramSpec {
    ProgramSpec { program, hook: Hook::Tracepoint, target, when: None }
}
