//! Probe-table rows of the subscriber inventory: the `iter/task` sweep program, and per mode
//! the hooks that tell the agent the inventory changed (see `crate::subscribers`).

use crate::kernel::FieldGroup;
use crate::probes::spec::{Fallback, Family, FamilyId, Hook, Need, ProgramSpec, Traced, TracedHook};

const REGISTER: &str = "__mmu_notifier_register";
const UNREGISTER: &str = "mmu_notifier_unregister";
const PUT: &str = "mmu_notifier_put";
const INSERT: &str = "mmu_interval_notifier_insert";
const INSERT_LOCKED: &str = "mmu_interval_notifier_insert_locked";
const REMOVE: &str = "mmu_interval_notifier_remove";
/// The sweep program's target.
const TASKS: &str = "task";

/// What the sweep reads, in every mode.
const FIELDS: [Need; 4] = [
    Need::Fields(FieldGroup::TaskCgroup),
    Need::Fields(FieldGroup::MmOwner),
    Need::Fields(FieldGroup::NotifierOps),
    Need::Fields(FieldGroup::Subscribers),
];

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("subscribers");

pub static SUBSCRIBERS: Family = Family {
    id: ID,
    description: "mmu_notifier subscriptions and long-term pinned memory per mm (task-iterator inventory)",
    required: false,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            FIELDS[0],
            FIELDS[1],
            FIELDS[2],
            FIELDS[3],
            Need::Function(REGISTER),
            Need::Function(UNREGISTER),
            Need::Function(PUT),
            Need::Function(INSERT),
            Need::Function(INSERT_LOCKED),
            Need::Function(REMOVE),
        ],
        hooks: &[
            TracedHook::mode_copy("subscribers_iter", Hook::Iter, TASKS),
            TracedHook::exit("sub_register", REGISTER),
            TracedHook::exit("sub_unregister", UNREGISTER),
            TracedHook::exit("sub_put", PUT),
            TracedHook::exit("sub_interval_insert", INSERT),
            TracedHook::exit("sub_interval_insert_locked", INSERT_LOCKED),
            TracedHook::exit("sub_interval_remove", REMOVE),
            // `mmap:exit_mmap` (6.1+): an mm with subscriptions or pins went away.
            TracedHook::mode_copy("sub_exit_mmap", Hook::TpBtf, "exit_mmap").when(Need::BtfTracepoint("exit_mmap")),
        ],
        kprobe_degraded: "higher per-event cost of the change hooks",
    },
    fallbacks: &[Fallback {
        name: "iter",
        needs: &FIELDS,
        programs: &[ProgramSpec::new("subscribers_iter_tracepoint", Hook::Iter, TASKS)],
        degraded: "no register/unregister hooks: re-swept at most once per second, at scrape or API time",
    }],
};
