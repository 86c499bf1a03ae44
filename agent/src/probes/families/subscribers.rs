//! Probe-table rows of the subscriber inventory: the `iter/task` sweep program, and per mode
//! the hooks that tell the agent the inventory changed (see `crate::subscribers`).

use crate::kernel::FieldGroup;
use crate::probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec};

const REGISTER: &str = "__mmu_notifier_register";
const UNREGISTER: &str = "mmu_notifier_unregister";
const PUT: &str = "mmu_notifier_put";
const INSERT: &str = "mmu_interval_notifier_insert";
const INSERT_LOCKED: &str = "mmu_interval_notifier_insert_locked";
const REMOVE: &str = "mmu_interval_notifier_remove";
/// `mmap:exit_mmap` (6.1+): an mm with subscriptions or pins went away.
const EXIT_MMAP: Option<Need> = Some(Need::BtfTracepoint("exit_mmap"));

const FIELDS: [Need; 4] = [
    Need::Fields(FieldGroup::TaskCgroup),
    Need::Fields(FieldGroup::MmOwner),
    Need::Fields(FieldGroup::NotifierOps),
    Need::Fields(FieldGroup::Subscribers),
];
const HOOKED: [Need; 6] = [
    Need::Function(REGISTER),
    Need::Function(UNREGISTER),
    Need::Function(PUT),
    Need::Function(INSERT),
    Need::Function(INSERT_LOCKED),
    Need::Function(REMOVE),
];

const fn iter(program: &'static str) -> ProgramSpec {
    ProgramSpec { program, hook: Hook::Iter, target: "task", when: None }
}

const fn on(program: &'static str, hook: Hook, target: &'static str) -> ProgramSpec {
    ProgramSpec { program, hook, target, when: None }
}

const fn needs<const N: usize>(first: Need) -> [Need; N] {
    let mut all = [first; N];
    let mut i = 0;
    while i < FIELDS.len() {
        all[1 + i] = FIELDS[i];
        i += 1;
    }
    let mut j = 0;
    while 1 + FIELDS.len() + j < N {
        all[1 + FIELDS.len() + j] = HOOKED[j];
        j += 1;
    }
    all
}

pub static SUBSCRIBERS: Family = Family {
    id: FamilyId::Subscribers,
    description: "mmu_notifier subscriptions and long-term pinned memory per mm (task-iterator inventory)",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &needs::<11>(Need::Trampolines),
            programs: &[
                iter("subscribers_iter_fentry"),
                on("sub_register_fexit", Hook::FExit, REGISTER),
                on("sub_unregister_fexit", Hook::FExit, UNREGISTER),
                on("sub_put_fexit", Hook::FExit, PUT),
                on("sub_interval_insert_fexit", Hook::FExit, INSERT),
                on("sub_interval_insert_locked_fexit", Hook::FExit, INSERT_LOCKED),
                on("sub_interval_remove_fexit", Hook::FExit, REMOVE),
                ProgramSpec {
                    program: "sub_exit_mmap_fentry",
                    hook: Hook::TpBtf,
                    target: "exit_mmap",
                    when: EXIT_MMAP,
                },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &needs::<11>(Need::Kprobes),
            programs: &[
                iter("subscribers_iter_kprobe"),
                on("sub_register_kretprobe", Hook::KRetProbe, REGISTER),
                on("sub_unregister_kretprobe", Hook::KRetProbe, UNREGISTER),
                on("sub_put_kretprobe", Hook::KRetProbe, PUT),
                on("sub_interval_insert_kretprobe", Hook::KRetProbe, INSERT),
                on("sub_interval_insert_locked_kretprobe", Hook::KRetProbe, INSERT_LOCKED),
                on("sub_interval_remove_kretprobe", Hook::KRetProbe, REMOVE),
                ProgramSpec {
                    program: "sub_exit_mmap_kprobe",
                    hook: Hook::TpBtf,
                    target: "exit_mmap",
                    when: EXIT_MMAP,
                },
            ],
            degraded: "higher per-event cost of the change hooks",
        },
        Alternative {
            name: "iter",
            mode: Mode::Tracepoint,
            needs: &FIELDS,
            programs: &[iter("subscribers_iter_tracepoint")],
            degraded: "no register/unregister hooks: re-swept at most once per second, at scrape or API time",
        },
    ],
};
