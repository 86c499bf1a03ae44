//! The cause-hook family: callers whose window tags the invalidations started inside it with a
//! cause (see `mmuscope_abi::Cause`). Each hook is attached only where its function exists, so
//! a caller missing on a kernel (inlined, renamed) drops only that cause.
//!
//! Without these hooks (tracepoint mode, or a hook unavailable) brackets still get a cause
//! from the task's context: the system call, a page fault, reclaim or a kernel thread. The
//! kernel threads (kswapd, kcompactd, khugepaged, ksmd) are told apart by name in every mode,
//! so they need no hook; `collapse_huge_page` would be wrong anyway, as `MADV_COLLAPSE` (a
//! madvise cause) runs it too.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Family, FamilyId, Need, Traced, TracedHook},
};

const THP_SPLIT: &str = "__split_huge_pmd";
/// `split_huge_page` and its successors: its unmap (`unmap_folio`, TTU_SYNC) opens brackets of its own in
/// `try_to_migrate_one`/`try_to_unmap_one`, outside any `__split_huge_pmd` window. 7.2: `__folio_split`; 6.10–6.x:
/// `split_huge_page_to_list_to_order`; before: `split_huge_page_to_list`.
const THP_SPLIT_PAGE: &str = "__folio_split|split_huge_page_to_list_to_order|split_huge_page_to_list";
/// A PMD split inside a bracket opened for another reason (6.11+: `try_to_unmap_one` splits in its walk, after
/// opening its bracket); the hook re-tags the thread's innermost open bracket.
const THP_SPLIT_IN_BRACKET: &str = "split_huge_pmd_locked";
/// Page reclaim: the folio API from 6.2, the page API before.
const RECLAIM: &str = "shrink_folio_list|shrink_page_list";
const MIGRATION: &str = "migrate_pages";
const NUMA: &str = "change_prot_numa";
const SOFT_DIRTY: &str = "clear_refs_write";
const USERFAULTFD: &str = "mwriteprotect_range";
const EXIT: &str = "exit_mmap";
/// At least one of the callers must exist, or the family would attach nothing and say "attached".
const ANY: &str = "__split_huge_pmd|__folio_split|split_huge_page_to_list_to_order|split_huge_page_to_list|\
                   shrink_folio_list|shrink_page_list|migrate_pages|change_prot_numa|\
                   clear_refs_write|mwriteprotect_range|exit_mmap";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("causes");

pub static CAUSES: Family = Family {
    id: ID,
    description: "caller windows that tag brackets with a precise cause (thp_split, reclaim, migration, numa, soft_dirty, userfaultfd, exit); without them the cause comes from the task's context",
    required: false,
    traced: Traced {
        // `vm_area_struct.vm_mm`: the in-bracket split hook matches the split's mm with the open bracket's.
        needs: &[Need::ModeAvailable, Need::Function(ANY), Need::Fields(FieldGroup::VmaMm)],
        // A window only tags brackets, and brackets only run for mms with subscriptions, while the callers run for
        // every process (`exit_mmap` at each exit, splits, reclaim, migration): every window is attached only while
        // some mm has subscriptions (`probes::arming`).
        hooks: &[
            TracedHook::entry_and_exit("cause_thp_split", THP_SPLIT).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_thp_split_page", THP_SPLIT_PAGE).where_hookable().while_subscribed(),
            TracedHook::entry("cause_thp_split_in_bracket", THP_SPLIT_IN_BRACKET).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_reclaim", RECLAIM).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_migration", MIGRATION).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_numa", NUMA).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_soft_dirty", SOFT_DIRTY).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_userfaultfd", USERFAULTFD).where_hookable().while_subscribed(),
            TracedHook::entry_and_exit("cause_exit", EXIT).where_hookable().while_subscribed(),
        ],
        kprobe_degraded: "higher per-event cost",
    },
    fallbacks: &[],
};
