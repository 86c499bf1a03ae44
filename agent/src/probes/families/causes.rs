//! The cause-hook family: callers whose window tags the invalidations started inside it with a
//! cause (see `mmuscope_abi::Cause`). Each hook is attached only where its function exists, so
//! a caller missing on a kernel (inlined, renamed) drops only that cause.
//!
//! Without these hooks (tracepoint mode, or a hook unavailable) brackets still get a cause
//! from the task's context: the system call, a page fault, reclaim or a kernel thread. The
//! kernel threads (kswapd, kcompactd, khugepaged, ksmd) are told apart by name in every mode,
//! so they need no hook; `collapse_huge_page` would be wrong anyway, as `MADV_COLLAPSE` (a
//! madvise cause) runs it too.

use crate::probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec};

const THP_SPLIT: &str = "__split_huge_pmd";
/// Page reclaim: the folio API from 6.2, the page API before.
const RECLAIM: &str = "shrink_folio_list|shrink_page_list";
const MIGRATION: &str = "migrate_pages";
const NUMA: &str = "change_prot_numa";
const SOFT_DIRTY: &str = "clear_refs_write";
const USERFAULTFD: &str = "mwriteprotect_range";
const EXIT: &str = "exit_mmap";
/// At least one of the callers must exist, or the family would attach nothing and say "attached".
const ANY: &str = "__split_huge_pmd|shrink_folio_list|shrink_page_list|migrate_pages|change_prot_numa|\
                   clear_refs_write|mwriteprotect_range|exit_mmap";

/// Entry and return hooks of one caller, attached only where the caller can be hooked.
macro_rules! hooks {
    ($entry:literal, $entry_hook:expr, $ret:literal, $ret_hook:expr, $target:expr, $when:expr) => {
        [
            ProgramSpec { program: $entry, hook: $entry_hook, target: $target, when: Some($when) },
            ProgramSpec { program: $ret, hook: $ret_hook, target: $target, when: Some($when) },
        ]
    };
}

macro_rules! fentry {
    ($entry:literal, $ret:literal, $target:expr) => {
        hooks!($entry, Hook::FEntry, $ret, Hook::FExit, $target, Need::TrampolineArgs($target))
    };
}

macro_rules! kprobe {
    ($entry:literal, $ret:literal, $target:expr) => {
        hooks!($entry, Hook::KProbe, $ret, Hook::KRetProbe, $target, Need::Function($target))
    };
}

const FENTRY_PROGRAMS: &[ProgramSpec] = &concat_specs([
    fentry!("cause_thp_split_fentry", "cause_thp_split_fexit", THP_SPLIT),
    fentry!("cause_reclaim_fentry", "cause_reclaim_fexit", RECLAIM),
    fentry!("cause_migration_fentry", "cause_migration_fexit", MIGRATION),
    fentry!("cause_numa_fentry", "cause_numa_fexit", NUMA),
    fentry!("cause_soft_dirty_fentry", "cause_soft_dirty_fexit", SOFT_DIRTY),
    fentry!("cause_userfaultfd_fentry", "cause_userfaultfd_fexit", USERFAULTFD),
    fentry!("cause_exit_fentry", "cause_exit_fexit", EXIT),
]);

const KPROBE_PROGRAMS: &[ProgramSpec] = &concat_specs([
    kprobe!("cause_thp_split_kprobe", "cause_thp_split_kretprobe", THP_SPLIT),
    kprobe!("cause_reclaim_kprobe", "cause_reclaim_kretprobe", RECLAIM),
    kprobe!("cause_migration_kprobe", "cause_migration_kretprobe", MIGRATION),
    kprobe!("cause_numa_kprobe", "cause_numa_kretprobe", NUMA),
    kprobe!("cause_soft_dirty_kprobe", "cause_soft_dirty_kretprobe", SOFT_DIRTY),
    kprobe!("cause_userfaultfd_kprobe", "cause_userfaultfd_kretprobe", USERFAULTFD),
    kprobe!("cause_exit_kprobe", "cause_exit_kretprobe", EXIT),
]);

/// The entry/return pairs as one flat list.
const fn concat_specs(pairs: [[ProgramSpec; 2]; 7]) -> [ProgramSpec; 14] {
    let mut out = [pairs[0][0]; 14];
    let mut i = 0;
    while i < 7 {
        out[2 * i] = pairs[i][0];
        out[2 * i + 1] = pairs[i][1];
        i += 1;
    }
    out
}

pub static CAUSES: Family = Family {
    id: FamilyId::Causes,
    description: "caller windows that tag brackets with a precise cause (thp_split, reclaim, migration, numa, soft_dirty, userfaultfd, exit); without them the cause comes from the task's context",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[Need::Trampolines, Need::Function(ANY)],
            programs: FENTRY_PROGRAMS,
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[Need::Kprobes, Need::Function(ANY)],
            programs: KPROBE_PROGRAMS,
            degraded: "higher per-event cost",
        },
    ],
};
