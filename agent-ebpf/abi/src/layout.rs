//! Kernel struct offsets and enum values, resolved from BTF by the agent and written into the
//! eBPF object's read-only data before load (`EbpfLoader::override_global`).

/// Byte offsets (and a few enum values) the programs need to walk kernel memory.
///
/// A family whose fields cannot all be resolved on the running kernel is not loaded, so a
/// zero here is never dereferenced on a guess.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `struct mmu_notifier_range`: `mm`, `start`, `end`, `flags`, `event`.
    pub range_mm: u32,
    pub range_start: u32,
    pub range_end: u32,
    pub range_flags: u32,
    pub range_event: u32,
    /// `struct mm_struct.owner` (exists with `CONFIG_MEMCG`).
    pub mm_owner: u32,
    /// `struct task_struct.cgroups` (`struct css_set *`).
    pub task_cgroups: u32,
    /// `struct css_set.subsys[0]` and `.dfl_cgrp`.
    pub css_set_subsys: u32,
    pub css_set_dfl_cgrp: u32,
    /// `struct cgroup_subsys_state.cgroup`.
    pub css_cgroup: u32,
    /// `struct cgroup.kn` and `struct kernfs_node.id` (u64 since 5.5).
    pub cgroup_kn: u32,
    pub kn_id: u32,
    /// `enum cgroup_subsys_id::memory_cgrp_id`, or `u32::MAX` without a memory controller
    /// (then the default hierarchy's cgroup is used).
    pub memory_cgrp_id: u32,
    pub _pad: u32,
    /// `GFP_HIGHUSER_MOVABLE` from the kernel's `___GFP_*_BIT` enum: the gfp mask of the page
    /// fork allocates for each eager copy (tracepoint mode counts those allocations).
    pub gfp_highuser_movable: u64,
    /// `mm_struct.notifier_subscriptions`, `mmu_notifier_subscriptions.list` (hlist head),
    /// `mmu_notifier.hlist` and `.ops`, and the `mmu_notifier_ops` slot of the secondary-TLB
    /// callback (`invalidate_range` before 6.6, `arch_invalidate_secondary_tlbs` after).
    pub mm_notifier_subscriptions: u32,
    pub subscriptions_list: u32,
    pub notifier_hlist: u32,
    pub notifier_ops: u32,
    pub ops_secondary_tlb: u32,
    /// `hlist_node.next`.
    pub hlist_next: u32,
    /// `task_struct.mm` (NULL for kernel threads).
    pub task_mm: u32,
    /// `mmu_notifier_subscriptions.itree.rb_root.rb_node`: the root of the interval tree, non-NULL while an
    /// interval notifier is registered (`has_itree` is not used: it stays set once the mm used one).
    pub subscriptions_itree_root: u32,
    /// `struct pt_regs.orig_ax` (x86-64: the system call number, -1 outside a system call) and
    /// `task_struct.reclaim_state` (set during kswapd and direct reclaim): the context half of
    /// the cause tag. `cause_context` is 1 when both resolved; otherwise causes come from the
    /// caller hooks only.
    pub pt_regs_orig_ax: u32,
    pub task_reclaim_state: u32,
    pub cause_context: u32,
    /// 1 when every interval-notifier field below resolved (`hmm_range_notifier` aside, which
    /// only the hmm program reads and the agent checks itself).
    pub interval_fields: u32,
    /// `mmu_interval_notifier`: `mm`, `ops`, `invalidate_seq`; `mmu_interval_notifier_ops.invalidate`;
    /// `mmu_notifier_subscriptions.invalidate_seq` (odd while an interval invalidation runs);
    /// `hmm_range.notifier`.
    pub interval_sub_mm: u32,
    pub interval_sub_ops: u32,
    pub interval_sub_seq: u32,
    pub interval_ops_invalidate: u32,
    pub subscriptions_invalidate_seq: u32,
    pub hmm_range_notifier: u32,
    /// `task_struct.active_mm`: an exiting task (its `mm` already NULL) still has its own mm
    /// here while `exit_mmap` runs, which tells it apart from a kernel thread.
    pub task_active_mm: u32,
    /// `struct pt_regs` `ip`, `sp`, `di`, `si`, `dx` (x86-64; part of the cause-context group): the user
    /// registers of the system call or fault in progress identify one operation for the overlap check.
    pub pt_regs_ip: u32,
    pub pt_regs_sp: u32,
    pub pt_regs_di: u32,
    pub pt_regs_si: u32,
    pub pt_regs_dx: u32,
    /// `struct pt_regs.ax` (x86-64, cause-context group): `-ENOSYS` while the system call runs, the
    /// return value after it. A new child's registers are a copy of its parent's with `ax` = 0, which
    /// tells the forking parent apart from its child in the clone system call.
    pub pt_regs_ax: u32,
    /// `vm_area_struct.vm_mm`: an anon rmap added to a VMA of another mm than the current task's is
    /// the only kind a fork copy can be, so the per-copy hook skips every ordinary fault with two loads.
    pub vma_mm: u32,
    /// `mmu_gather.mm`: the gather hooks skip every gather of an mm without notifier subscriptions.
    pub gather_mm: u32,
    /// The interval tree's nodes (interval-notifier group), relative to the `rb_node` the tree links:
    /// `rb_node.rb_right`/`rb_left`/`__rb_parent_color` (the parent with the colour in its two low bits, the
    /// kernel's `rb_parent()`) and `interval_tree_node.start`/`last`/`__subtree_last`.
    pub itree_rb_right: u32,
    pub itree_rb_left: u32,
    pub itree_rb_parent: u32,
    pub itree_start: u32,
    pub itree_last: u32,
    pub itree_subtree_last: u32,
    /// `mmu_interval_notifier.interval_tree` + `interval_tree_node.rb` (interval-notifier group): from a tree node
    /// back to its notifier, whose `ops` names the subscriber.
    pub itree_node_to_interval_sub: u32,
    /// `mmu_notifier_ops.invalidate_range_start` and `_end` (notifier-ops group): the callbacks that name a
    /// subscriber (see `SubscriberSlot`).
    pub ops_start: u32,
    pub ops_end: u32,
    /// `folio._folio_nr_pages` (renamed `_nr_pages` by 7.2; 64-bit kernels): the base pages of a large folio, which
    /// gives the bytes of a hugetlb page copied at fork.
    pub folio_nr_pages: u32,
    /// 1 when the kernel has `bpf_get_current_task_btf` (5.11+; `BPF_FUNC_get_current_task_btf` in BTF's
    /// `enum bpf_func_id`): the hot paths then read the current task with direct BTF loads, else with
    /// `bpf_get_current_task` and probe reads. Read as a frozen constant, so the verifier drops the branch this
    /// kernel cannot load.
    pub task_btf: u32,
    /// `vm_fault.page`, `page.compound_head` (`compound_info` by 7.2; bit 0 set on a tail page) and `page.mapping`
    /// (KSM-page group): whether the page a write fault copies is a KSM page (`ksm_cow` family).
    pub vmf_page: u32,
    pub page_compound_head: u32,
    pub page_mapping: u32,
}

/// The low bits of `page->mapping` that mark a KSM page: `PAGE_MAPPING_ANON | PAGE_MAPPING_MOVABLE` (5.10–6.x
/// `include/linux/page-flags.h`, `PAGE_MAPPING_KSM`; `FOLIO_MAPPING_KSM` after the rename, the same bits). A macro,
/// so BTF does not carry it; these two bits have meant "KSM" since 2.6.32.
pub const PAGE_MAPPING_KSM: u64 = 3;

/// Whether a page whose `compound_head` word and `mapping` are these is a KSM page: not a tail page (whose
/// `mapping` slot holds fields of its large folio), and the mapping's low bits are [`PAGE_MAPPING_KSM`] (a KSM page
/// is always a small page, so its own `mapping` is its folio's).
#[inline(always)]
pub const fn is_ksm_page(compound_head: u64, mapping: u64) -> bool {
    compound_head & 1 == 0 && mapping & PAGE_MAPPING_KSM == PAGE_MAPPING_KSM
}

impl KernelLayout {
    /// Every offset 0, the value the programs' `LAYOUT` has until the agent writes the resolved one. Written as
    /// `zeroed` so that a new field is declared in the struct alone.
    // SAFETY: every field is an integer, for which all-zero bytes are a valid value.
    pub const ZERO: Self = unsafe { core::mem::zeroed() };
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelLayout {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_untagged_head_pages_with_both_mapping_bits_are_ksm() {
        let (anon, ksm, movable) = (0xffff_8880_0000_1001, 0xffff_8880_0000_1003, 0xffff_8880_0000_1002);
        assert!(is_ksm_page(0xffff_ea00_0000_0040, ksm));
        assert!(!is_ksm_page(0xffff_ea00_0000_0040, anon));
        assert!(!is_ksm_page(0xffff_ea00_0000_0040, movable));
        assert!(!is_ksm_page(0, 0));
        // A tail page (bit 0 of compound_head): its mapping slot is its folio's counters, whatever their bits.
        assert!(!is_ksm_page(0xffff_ea00_0000_0001, ksm));
        assert!(!is_ksm_page(0xffff_ea00_0000_0001, 3));
    }
}
