//! Struct fields read from BTF, grouped by what needs them ([`FieldGroup`]): a missing field disables only the probe
//! families of its group, and the reason names the field.

use super::btf::{BtfError, KernelBtf};

/// A set of fields one kind of program needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldGroup {
    /// `struct mmu_notifier_range` members read at bracket start.
    NotifierRange,
    /// task → css_set → memory css (or default cgroup) → cgroup → kernfs id.
    TaskCgroup,
    /// `mm_struct.owner` (needs `CONFIG_MEMCG`).
    MmOwner,
    /// `GFP_HIGHUSER_MOVABLE` composed from the `___GFP_*_BIT` enum (6.x BTF).
    GfpMask,
    /// mm → notifier subscriptions → `mmu_notifier` → ops → secondary-TLB callback slot, and
    /// `mmu_gather.mm` (the gather hooks' early exit for mms without subscriptions).
    NotifierOps,
    /// `pt_regs.orig_ax` and `task_struct.reclaim_state`: the system call or reclaim context of
    /// a cause tag (x86-64), and the BPF helpers that reach them (`bpf_get_current_task_btf`,
    /// `bpf_task_pt_regs`: 5.15). Without them causes come from the caller hooks only.
    CauseContext,
    /// `mmu_interval_notifier` (mm, ops, invalidate_seq), its ops' `invalidate` and the
    /// subscriptions' `invalidate_seq`.
    IntervalNotifier,
    /// `hmm_range.notifier` (`CONFIG_HMM_MIRROR`).
    HmmRange,
    /// `vm_area_struct.vm_mm`: the fork-copy hook's test for a foreign mm, and the cause hook of splits inside a
    /// bracket.
    VmaMm,
    /// `folio._nr_pages` (or `_folio_nr_pages`): the size of a hugetlb page copied at fork.
    FolioSize,
    /// `vm_fault.page`, `page.compound_head` (or `compound_info`) and `page.mapping`: whether a write fault copies a
    /// KSM page (`ksm_cow` family).
    KsmPage,
    /// task pid/tgid/comm, `mm->pinned_vm`, notifier ops callbacks and the interval tree (inventory).
    Subscribers,
}

/// Looks fields up in BTF and notes, per group, those it could not find (their offsets read as 0).
pub(super) struct Resolver<'a> {
    btf: &'a KernelBtf,
    missing: Vec<(FieldGroup, String)>,
}

impl<'a> Resolver<'a> {
    pub(super) fn new(btf: &'a KernelBtf) -> Self {
        Self { btf, missing: Vec::new() }
    }

    pub(super) fn btf(&self) -> &'a KernelBtf {
        self.btf
    }

    /// Notes that `what` of `group` is not in this kernel's BTF.
    pub(super) fn missing(&mut self, group: FieldGroup, what: String) {
        self.missing.push((group, what));
    }

    /// Every field noted missing, with its group.
    pub(super) fn into_missing(self) -> Vec<(FieldGroup, String)> {
        self.missing
    }

    /// Offset of `strukt.member`, checking its size where the programs read a fixed width.
    pub(super) fn offset(
        &mut self,
        group: FieldGroup,
        strukt: &str,
        member: &str,
        size: Option<u32>,
    ) -> Result<u32, BtfError> {
        match self.btf.member(strukt, member)? {
            Some(f) if size.is_none_or(|s| s == f.size) => Ok(f.offset),
            Some(f) => {
                self.missing
                    .push((group, format!("{strukt}.{member} of {} bytes (found {})", size.unwrap_or(0), f.size)));
                Ok(0)
            }
            None => {
                self.missing.push((group, format!("{strukt}.{member}")));
                Ok(0)
            }
        }
    }
}
