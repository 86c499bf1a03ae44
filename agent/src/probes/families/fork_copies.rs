//! The fork-copy family: pages `fork()` copies eagerly because they may be DMA-pinned, and the THPs split for it.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec},
};

/// The fork window: `dup_mmap` (out of line on most builds), else its caller `copy_process`.
const DUP_MMAP: &str = "dup_mmap|copy_process";
/// The anon-rmap call of each eager fork copy: folio API from 6.3, page API before.
const COPY_MARKER: &str = "folio_add_new_anon_rmap|page_add_new_anon_rmap";
const SPLIT: &str = "__split_huge_pmd";

pub static FORK_COPIES: Family = Family {
    id: FamilyId::ForkCopies,
    description: "pages copied eagerly at fork() because they may be DMA-pinned, and THPs split for it, per cgroup of the parent mm's owner",
    required: true,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::Function(DUP_MMAP),
                Need::Function(COPY_MARKER),
                Need::Function(SPLIT),
                Need::Fields(FieldGroup::TaskCgroup),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::VmaMm),
            ],
            programs: &[
                ProgramSpec { program: "fork_window_fentry", hook: Hook::FEntry, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_window_fexit", hook: Hook::FExit, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_copy_fentry", hook: Hook::FEntry, target: COPY_MARKER, when: None },
                ProgramSpec { program: "fork_split_fentry", hook: Hook::FEntry, target: SPLIT, when: None },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::Function(DUP_MMAP),
                Need::Function(COPY_MARKER),
                Need::Function(SPLIT),
                Need::Fields(FieldGroup::TaskCgroup),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::VmaMm),
            ],
            programs: &[
                ProgramSpec { program: "fork_window_kprobe", hook: Hook::KProbe, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_window_kretprobe", hook: Hook::KRetProbe, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_copy_kprobe", hook: Hook::KProbe, target: COPY_MARKER, when: None },
                ProgramSpec { program: "fork_split_kprobe", hook: Hook::KProbe, target: SPLIT, when: None },
            ],
            degraded: "higher per-event cost",
        },
        Alternative {
            name: "tp_btf",
            mode: Mode::Tracepoint,
            needs: &[
                Need::BtfTracepoint("mm_page_alloc"),
                Need::BtfTracepoint("task_newtask"),
                Need::Fields(FieldGroup::TaskCgroup),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::GfpMask),
                Need::Fields(FieldGroup::CauseContext),
            ],
            programs: &[
                ProgramSpec { program: "fork_page_alloc", hook: Hook::TpBtf, target: "mm_page_alloc", when: None },
                ProgramSpec { program: "fork_newtask_close", hook: Hook::TpBtf, target: "task_newtask", when: None },
            ],
            degraded: "no THP split count; copies counted by their order-0 GFP_HIGHUSER_MOVABLE allocation by the parent in the clone system call",
        },
    ],
};
