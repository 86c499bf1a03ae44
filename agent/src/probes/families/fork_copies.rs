//! The fork-copy family: pages `fork()` copies eagerly because they may be DMA-pinned, and the THPs split for it.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Fallback, Family, FamilyId, Hook, Need, ProgramSpec, Traced, TracedHook},
};

/// The fork window: `dup_mmap` (out of line on most builds), else its caller `copy_process`.
const DUP_MMAP: &str = "dup_mmap|copy_process";
/// The anon-rmap call of each eager fork copy: folio API from 6.3, page API before.
const COPY_MARKER: &str = "folio_add_new_anon_rmap|page_add_new_anon_rmap";
const SPLIT: &str = "__split_huge_pmd";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("fork_copies");

pub static FORK_COPIES: Family = Family {
    id: ID,
    description: "pages copied eagerly at fork() because they may be DMA-pinned, and THPs split for it, per cgroup of the parent mm's owner",
    required: true,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            Need::Function(DUP_MMAP),
            Need::Function(COPY_MARKER),
            Need::Function(SPLIT),
            Need::Fields(FieldGroup::TaskCgroup),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::VmaMm),
            Need::BtfTracepoint("task_newtask"),
        ],
        hooks: &[
            TracedHook::entry_and_exit("fork_window", DUP_MMAP),
            // Every anonymous fault of every process passes it.
            TracedHook::entry("fork_copy", COPY_MARKER).while_pinned(),
            TracedHook::entry("fork_split", SPLIT),
            TracedHook::mode_copy("fork_newtask", Hook::TpBtf, "task_newtask"),
        ],
        kprobe_degraded: "higher per-event cost",
    },
    fallbacks: &[Fallback {
        name: "tp_btf",
        needs: &[
            Need::BtfTracepoint("mm_page_alloc"),
            Need::BtfTracepoint("task_newtask"),
            Need::Fields(FieldGroup::TaskCgroup),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::GfpMask),
            Need::Fields(FieldGroup::CauseContext),
        ],
        programs: &[
            // Every page allocation of every process passes it.
            ProgramSpec::new("fork_page_alloc", Hook::TpBtf, "mm_page_alloc").while_pinned(),
            ProgramSpec::new("fork_newtask_close", Hook::TpBtf, "task_newtask"),
        ],
        degraded: "no THP split count; copies counted by their order-0 GFP_HIGHUSER_MOVABLE allocation by the parent in the clone system call",
    }],
};
