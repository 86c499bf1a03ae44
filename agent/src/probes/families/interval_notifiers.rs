//! The interval-notifier family: reader waits in `mmu_interval_read_begin` and
//! `hmm_range_fault` collisions. (Brackets that reach interval subscribers are counted by the
//! bracket programs themselves when the interval fields resolve.)

use crate::kernel::FieldGroup;
use crate::probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec};

const READ_BEGIN: &str = "mmu_interval_read_begin";
const HMM_FAULT: &str = "hmm_range_fault";
const HMM: Option<Need> = Some(Need::Function(HMM_FAULT));

pub static INTERVAL_NOTIFIERS: Family = Family {
    id: FamilyId::IntervalNotifiers,
    description: "interval-notifier readers that waited for an invalidation, and hmm_range_fault -EBUSY collisions",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::Function(READ_BEGIN),
                Need::Fields(FieldGroup::IntervalNotifier),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "interval_read_fentry", hook: Hook::FEntry, target: READ_BEGIN, when: None },
                ProgramSpec { program: "interval_read_fexit", hook: Hook::FExit, target: READ_BEGIN, when: None },
                ProgramSpec { program: "hmm_fault_fexit", hook: Hook::FExit, target: HMM_FAULT, when: HMM },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::Function(READ_BEGIN),
                Need::Fields(FieldGroup::IntervalNotifier),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "interval_read_kprobe", hook: Hook::KProbe, target: READ_BEGIN, when: None },
                ProgramSpec {
                    program: "interval_read_kretprobe",
                    hook: Hook::KRetProbe,
                    target: READ_BEGIN,
                    when: None,
                },
                ProgramSpec { program: "hmm_fault_kprobe", hook: Hook::KProbe, target: HMM_FAULT, when: HMM },
                ProgramSpec { program: "hmm_fault_kretprobe", hook: Hook::KRetProbe, target: HMM_FAULT, when: HMM },
            ],
            degraded: "higher per-event cost",
        },
    ],
};
