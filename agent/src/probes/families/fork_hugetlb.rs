//! The hugetlb fork-copy family: huge pages `fork()` copies eagerly because the parent's anonymous hugetlb folio may
//! be DMA-pinned, and their bytes.

use crate::{
    kernel::FieldGroup,
    probes::spec::{Family, FamilyId, Need, Traced, TracedHook},
};

/// Fork's copy of one hugetlb VMA: the window.
const COPY_RANGE: &str = "copy_hugetlb_page_range";
/// The hugetlb anon-rmap call that installs each copy in the child: folio API from 6.x, page API in 6.1.
const COPY_MARKER: &str = "hugetlb_add_new_anon_rmap|hugepage_add_new_anon_rmap";

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("fork_hugetlb");

pub static FORK_HUGETLB: Family = Family {
    id: ID,
    description: "hugetlb pages copied eagerly at fork() because they may be DMA-pinned, per cgroup of the parent mm's owner",
    required: false,
    traced: Traced {
        needs: &[
            Need::ModeAvailable,
            Need::Function(COPY_RANGE),
            Need::Function(COPY_MARKER),
            Need::Fields(FieldGroup::TaskCgroup),
            Need::Fields(FieldGroup::MmOwner),
            Need::Fields(FieldGroup::VmaMm),
            Need::Fields(FieldGroup::FolioSize),
        ],
        hooks: &[
            TracedHook::entry_and_exit("fork_hugetlb_window", COPY_RANGE),
            TracedHook::entry("fork_hugetlb_copy", COPY_MARKER),
        ],
        kprobe_degraded: "higher per-event cost",
    },
    // No tracepoint sees a hugetlb copy: the huge page comes from the hugetlb pool, not the page allocator.
    fallbacks: &[],
};
