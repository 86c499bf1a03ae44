//! Resolves [`KernelLayout`] from BTF, group by group, so that a missing field disables only
//! the probe families that need it and the reason names the field.

use mmuscope_abi::KernelLayout;

use super::{
    btf::{BtfError, KernelBtf},
    fields::{FieldGroup, Resolver},
};

/// The layout plus, per group, what could not be resolved.
#[derive(Debug, Default)]
pub struct ResolvedLayout {
    pub layout: KernelLayout,
    /// Offsets of the subscriber inventory (its own global, see `layout_subscribers`).
    pub subscribers: mmuscope_abi::SubscriberLayout,
    missing: Vec<(FieldGroup, String)>,
}

impl ResolvedLayout {
    /// `Ok` when every field of `group` was found, else the missing fields, comma-separated.
    pub fn group(&self, group: FieldGroup) -> Result<(), String> {
        let missing: Vec<&str> = self.missing.iter().filter(|(g, _)| *g == group).map(|(_, f)| f.as_str()).collect();
        if missing.is_empty() { Ok(()) } else { Err(format!("BTF lacks {}", missing.join(", "))) }
    }

    /// Resolves every field; never fails for a missing field, only for unreadable BTF.
    pub fn resolve(btf: &KernelBtf) -> Result<Self, BtfError> {
        let mut r = Resolver::new(btf);
        use FieldGroup::*;
        let layout = KernelLayout {
            range_mm: r.offset(NotifierRange, "mmu_notifier_range", "mm", Some(8))?,
            range_start: r.offset(NotifierRange, "mmu_notifier_range", "start", Some(8))?,
            range_end: r.offset(NotifierRange, "mmu_notifier_range", "end", Some(8))?,
            range_flags: r.offset(NotifierRange, "mmu_notifier_range", "flags", Some(4))?,
            range_event: r.offset(NotifierRange, "mmu_notifier_range", "event", Some(4))?,
            mm_owner: r.offset(MmOwner, "mm_struct", "owner", Some(8))?,
            task_cgroups: r.offset(TaskCgroup, "task_struct", "cgroups", Some(8))?,
            css_set_subsys: r.offset(TaskCgroup, "css_set", "subsys", None)?,
            css_set_dfl_cgrp: r.offset(TaskCgroup, "css_set", "dfl_cgrp", Some(8))?,
            css_cgroup: r.offset(TaskCgroup, "cgroup_subsys_state", "cgroup", Some(8))?,
            cgroup_kn: r.offset(TaskCgroup, "cgroup", "kn", Some(8))?,
            kn_id: r.offset(TaskCgroup, "kernfs_node", "id", Some(8))?,
            // No memory controller is not an error: the default hierarchy is used instead.
            memory_cgrp_id: btf
                .enum_value("cgroup_subsys_id", "memory_cgrp_id")?
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(u32::MAX),
            _pad: 0,
            gfp_highuser_movable: gfp_highuser_movable(&mut r)?,
            mm_notifier_subscriptions: r.offset(NotifierOps, "mm_struct", "notifier_subscriptions", Some(8))?,
            subscriptions_list: r.offset(NotifierOps, "mmu_notifier_subscriptions", "list", Some(8))?,
            notifier_hlist: r.offset(NotifierOps, "mmu_notifier", "hlist", None)?,
            notifier_ops: r.offset(NotifierOps, "mmu_notifier", "ops", Some(8))?,
            ops_secondary_tlb: secondary_tlb_slot(&mut r)?,
            hlist_next: r.offset(NotifierOps, "hlist_node", "next", Some(8))?,
            task_mm: r.offset(TaskCgroup, "task_struct", "mm", Some(8))?,
            subscriptions_itree_root: itree_root(&mut r)?,
            pt_regs_orig_ax: r.offset(CauseContext, "pt_regs", "orig_ax", Some(8))?,
            task_reclaim_state: r.offset(CauseContext, "task_struct", "reclaim_state", Some(8))?,
            cause_context: 0,
            interval_fields: 0,
            interval_sub_mm: r.offset(IntervalNotifier, "mmu_interval_notifier", "mm", Some(8))?,
            interval_sub_ops: r.offset(IntervalNotifier, "mmu_interval_notifier", "ops", Some(8))?,
            interval_sub_seq: r.offset(IntervalNotifier, "mmu_interval_notifier", "invalidate_seq", Some(8))?,
            interval_ops_invalidate: r.offset(IntervalNotifier, "mmu_interval_notifier_ops", "invalidate", Some(8))?,
            subscriptions_invalidate_seq: r.offset(
                IntervalNotifier,
                "mmu_notifier_subscriptions",
                "invalidate_seq",
                Some(8),
            )?,
            hmm_range_notifier: r.offset(HmmRange, "hmm_range", "notifier", Some(8))?,
            task_active_mm: r.offset(TaskCgroup, "task_struct", "active_mm", Some(8))?,
            pt_regs_ip: r.offset(CauseContext, "pt_regs", "ip", Some(8))?,
            pt_regs_sp: r.offset(CauseContext, "pt_regs", "sp", Some(8))?,
            pt_regs_di: r.offset(CauseContext, "pt_regs", "di", Some(8))?,
            pt_regs_si: r.offset(CauseContext, "pt_regs", "si", Some(8))?,
            pt_regs_dx: r.offset(CauseContext, "pt_regs", "dx", Some(8))?,
            pt_regs_ax: r.offset(CauseContext, "pt_regs", "ax", Some(8))?,
            vma_mm: r.offset(VmaMm, "vm_area_struct", "vm_mm", Some(8))?,
            gather_mm: r.offset(NotifierOps, "mmu_gather", "mm", Some(8))?,
            itree_rb_right: r.offset(IntervalNotifier, "rb_node", "rb_right", Some(8))?,
            itree_rb_left: r.offset(IntervalNotifier, "rb_node", "rb_left", Some(8))?,
            itree_rb_parent: r.offset(IntervalNotifier, "rb_node", "__rb_parent_color", Some(8))?,
            itree_start: interval_node_field(&mut r, "start")?,
            itree_last: interval_node_field(&mut r, "last")?,
            itree_subtree_last: interval_node_field(&mut r, "__subtree_last")?,
            itree_node_to_interval_sub: r.offset(IntervalNotifier, "mmu_interval_notifier", "interval_tree", None)?
                + r.offset(IntervalNotifier, "interval_tree_node", "rb", None)?,
            ops_start: r.offset(NotifierOps, "mmu_notifier_ops", "invalidate_range_start", Some(8))?,
            ops_end: r.offset(NotifierOps, "mmu_notifier_ops", "invalidate_range_end", Some(8))?,
            folio_nr_pages: folio_nr_pages(&mut r)?,
            task_btf: 0,
            vmf_page: r.offset(KsmPage, "vm_fault", "page", Some(8))?,
            page_compound_head: page_compound_head(&mut r)?,
            page_mapping: r.offset(KsmPage, "page", "mapping", Some(8))?,
        };
        let helpers = task_helpers(&mut r);
        let subscribers = super::layout_subscribers::resolve(&mut r)?;
        let mut resolved = Self { layout, subscribers, missing: r.into_missing() };
        resolved.layout.cause_context = u32::from(resolved.group(CauseContext).is_ok());
        resolved.layout.interval_fields = u32::from(resolved.group(IntervalNotifier).is_ok());
        resolved.layout.task_btf = u32::from(helpers.task_btf);
        Ok(resolved)
    }
}

/// Which task helpers the kernel's BPF offers, from BTF's `enum bpf_func_id` (no version check).
struct TaskHelpers {
    /// `bpf_get_current_task_btf` (5.11+).
    task_btf: bool,
}

/// Reads [`TaskHelpers`]. Without `bpf_task_pt_regs` (5.15+) the programs cannot find the current task's user
/// registers (x86-64's `task_pt_regs` needs `THREAD_SIZE`, which BTF does not carry): the cause-context group is
/// noted missing, so causes come from the caller hooks only and `check` says why.
fn task_helpers(r: &mut Resolver<'_>) -> TaskHelpers {
    const TASK_BTF: &str = "BPF_FUNC_get_current_task_btf";
    const PT_REGS: &str = "BPF_FUNC_task_pt_regs";
    let found = r.btf().enumerators(&[TASK_BTF, PT_REGS]);
    for (name, helper) in [(TASK_BTF, "bpf_get_current_task_btf"), (PT_REGS, "bpf_task_pt_regs")] {
        if !found.contains_key(name) {
            r.missing(FieldGroup::CauseContext, format!("the BPF helper {helper} (no {name} in enum bpf_func_id)"));
        }
    }
    TaskHelpers { task_btf: found.contains_key(TASK_BTF) }
}

/// `mmu_notifier_subscriptions.itree` (a `rb_root_cached`) + `rb_root.rb_node`: where the interval tree's root sits.
fn itree_root(r: &mut Resolver<'_>) -> Result<u32, BtfError> {
    let itree = r.offset(FieldGroup::NotifierOps, "mmu_notifier_subscriptions", "itree", None)?;
    let root = r.offset(FieldGroup::NotifierOps, "rb_root_cached", "rb_root.rb_node", Some(8))?;
    Ok(itree + root)
}

/// An `interval_tree_node` field relative to the node's `rb` member (the tree links `rb_node`s).
fn interval_node_field(r: &mut Resolver<'_>, name: &str) -> Result<u32, BtfError> {
    let field = r.offset(FieldGroup::IntervalNotifier, "interval_tree_node", name, Some(8))?;
    let rb = r.offset(FieldGroup::IntervalNotifier, "interval_tree_node", "rb", None)?;
    Ok(field.wrapping_sub(rb))
}

/// `folio._nr_pages` (7.2), `_folio_nr_pages` in 6.1 and 6.12.
fn folio_nr_pages(r: &mut Resolver<'_>) -> Result<u32, BtfError> {
    for name in ["_nr_pages", "_folio_nr_pages"] {
        if let Some(f) = r.btf().member("folio", name)?
            && f.size == 4
        {
            return Ok(f.offset);
        }
    }
    r.missing(FieldGroup::FolioSize, "folio.{_nr_pages,_folio_nr_pages} of 4 bytes".into());
    Ok(0)
}

/// `page.compound_head` (5.10–6.x), renamed `compound_info` by 7.2: the word whose bit 0 marks a tail page.
fn page_compound_head(r: &mut Resolver<'_>) -> Result<u32, BtfError> {
    for name in ["compound_head", "compound_info"] {
        if let Some(f) = r.btf().member("page", name)?
            && f.size == 8
        {
            return Ok(f.offset);
        }
    }
    r.missing(FieldGroup::KsmPage, "page.{compound_head,compound_info} of 8 bytes".into());
    Ok(0)
}

/// The ops slot of the secondary-TLB callback: `arch_invalidate_secondary_tlbs` (6.6+) or `invalidate_range` (before
/// 6.6).
fn secondary_tlb_slot(r: &mut Resolver<'_>) -> Result<u32, BtfError> {
    for name in ["arch_invalidate_secondary_tlbs", "invalidate_range"] {
        if let Some(f) = r.btf().member("mmu_notifier_ops", name)? {
            return Ok(f.offset);
        }
    }
    r.missing(FieldGroup::NotifierOps, "mmu_notifier_ops.{arch_invalidate_secondary_tlbs,invalidate_range}".into());
    Ok(0)
}

/// `GFP_HIGHUSER_MOVABLE` = `__GFP_RECLAIM | __GFP_IO | __GFP_FS | __GFP_HARDWALL | __GFP_HIGHMEM | __GFP_MOVABLE` (its
/// composition is stable; the bit numbers are not, so they come from BTF). 0 and a missing-field note when the enum
/// is absent (before 6.x).
fn gfp_highuser_movable(r: &mut Resolver<'_>) -> Result<u64, BtfError> {
    const BITS: [&str; 7] = [
        "___GFP_DIRECT_RECLAIM_BIT",
        "___GFP_KSWAPD_RECLAIM_BIT",
        "___GFP_IO_BIT",
        "___GFP_FS_BIT",
        "___GFP_HARDWALL_BIT",
        "___GFP_HIGHMEM_BIT",
        "___GFP_MOVABLE_BIT",
    ];
    let found = r.btf().enumerators(&BITS);
    let mut mask = 0u64;
    for name in BITS {
        match found.get(name) {
            Some(&bit) if bit < 64 => mask |= 1 << bit,
            _ => {
                r.missing(FieldGroup::GfpMask, format!("enumerator {name}"));
                return Ok(0);
            }
        }
    }
    Ok(mask)
}
