//! The [`SubscriberLayout`] of the subscriber inventory, resolved from BTF like the rest of
//! the layout (field group [`FieldGroup::Subscribers`]).
//!
//! `mm->pinned_vm` is the "has pinned pages" signal: it is a BTF field, counts pages pinned
//! long-term (io_uring fixed buffers, RDMA, VFIO/iommufd) and drops when they are unpinned.
//! `MMF_HAS_PINNED` would be closer to what fork tests, but it is a `#define` bit number that
//! BTF does not carry (and that moved between kernels), so it is deliberately not used.

use mmuscope_abi::SubscriberLayout;

use super::{
    btf::BtfError,
    fields::{FieldGroup, Resolver},
};

pub(super) fn resolve(r: &mut Resolver<'_>) -> Result<SubscriberLayout, BtfError> {
    use FieldGroup::Subscribers as S;
    let itree = r.offset(S, "mmu_notifier_subscriptions", "itree", None)?;
    let rb_node = r.offset(S, "rb_root_cached", "rb_root.rb_node", Some(8))?;
    let leftmost = r.offset(S, "rb_root_cached", "rb_leftmost", Some(8))?;
    let tree = r.offset(S, "mmu_interval_notifier", "interval_tree", None)?;
    let rb = r.offset(S, "interval_tree_node", "rb", None)?;
    Ok(SubscriberLayout {
        task_pid: r.offset(S, "task_struct", "pid", Some(4))?,
        task_tgid: r.offset(S, "task_struct", "tgid", Some(4))?,
        task_comm: r.offset(S, "task_struct", "comm", Some(16))?,
        mm_pinned_vm: r.offset(S, "mm_struct", "pinned_vm", Some(8))?,
        itree_root: itree + rb_node,
        itree_leftmost: itree + leftmost,
        interval_node_to_notifier: tree + rb,
        interval_ops: r.offset(S, "mmu_interval_notifier", "ops", Some(8))?,
        interval_ops_invalidate: r.offset(S, "mmu_interval_notifier_ops", "invalidate", Some(8))?,
        ops_release: r.offset(S, "mmu_notifier_ops", "release", Some(8))?,
        ops_start: r.offset(S, "mmu_notifier_ops", "invalidate_range_start", Some(8))?,
        ops_end: r.offset(S, "mmu_notifier_ops", "invalidate_range_end", Some(8))?,
    })
}
