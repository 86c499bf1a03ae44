//! The subscriber inventory: what the `iter/task` program writes (one [`SubscriberRecord`]
//! per mm, then one per `struct mmu_notifier` on its list and one per interval notifier in its tree) and the BTF
//! offsets it walks with.

/// Most `struct mmu_notifier`s reported per mm (KVM registers one per VM); more set
/// [`SubscriberRecord::truncated`] on the mm record.
pub const MAX_NOTIFIERS: u32 = 16;

/// Most interval notifiers reported per mm (an in-order walk of `mm->notifier_subscriptions->itree`); a longer tree
/// ends with a [`record_kind::ITREE_TRUNCATED`] record. GPU drivers register one per user-pointer
/// buffer and RDMA one per ODP region, so a tree can be longer; the bound keeps one task's records within the
/// iterator's buffer ([`ITER_BUFFER_BYTES`]), which a single task's output must fit in.
pub const MAX_INTERVALS: u32 = 128;

/// `bpf_seq_read`'s buffer (kernel/bpf/bpf_iter.c: `PAGE_SIZE << 3`, x86-64 pages): the output of one task must fit
/// in it, or the whole read fails with `E2BIG`.
pub const ITER_BUFFER_BYTES: usize = 8 * 4096;

// The records of one mm (its MM record, the list, the tree and its truncation mark) fit in the iterator's buffer.
const _: () = assert!(
    (1 + MAX_NOTIFIERS + MAX_INTERVALS + 1) as usize * core::mem::size_of::<SubscriberRecord>() <= ITER_BUFFER_BYTES
);

/// [`SubscriberRecord::kind`] values.
pub mod record_kind {
    /// An mm with subscriptions, long-term pinned pages (`pinned_vm > 0`) or the has-pinned flag.
    pub const MM: u32 = 1;
    /// One `struct mmu_notifier` of the preceding mm; `callbacks` = release, invalidate_range_start,
    /// invalidate_range_end, secondary-TLB callback (`invalidate_range` / `arch_invalidate_secondary_tlbs`),
    /// `change_pte` (0 on kernels without that op).
    pub const NOTIFIER: u32 = 2;
    /// One interval notifier of the preceding mm, in address order; `callbacks[0]` = `ops->invalidate`,
    /// `start`/`last` its interval.
    pub const INTERVAL: u32 = 3;
    /// After the INTERVAL records of the preceding mm: its interval tree goes on past them (more than
    /// [`super::MAX_INTERVALS`] notifiers, a node that could not be read, or no walk at all where the
    /// interval-notifier offsets did not resolve). `notifiers` = the INTERVAL records written.
    pub const ITREE_TRUNCATED: u32 = 4;
}

/// One record of the inventory stream (`bpf_seq_write`), fixed size so user space can split it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberRecord {
    pub kind: u32,
    /// Thread-group id of the task whose mm this is.
    pub tgid: u32,
    /// The `struct mm_struct` address (only used to group and de-duplicate records).
    pub mm: u64,
    /// Memory cgroup of `mm->owner` and its [`crate::key_flags`].
    pub cgroup_id: u64,
    pub cgroup_flags: u32,
    /// MM record: notifiers on the list (at most [`MAX_NOTIFIERS`] are reported). ITREE_TRUNCATED record: the
    /// INTERVAL records written before it.
    pub notifiers: u32,
    /// MM record: `mm->pinned_vm`, pages pinned long-term and accounted there (io_uring fixed buffers, RDMA, vDPA;
    /// not VFIO type1 or iommufd, which account in `locked_vm`).
    pub pinned_pages: u64,
    /// MM record: the interval tree has entries; the list was longer than [`MAX_NOTIFIERS`].
    pub has_itree: u32,
    pub truncated: u32,
    /// MM record: 1 if the mm is flagged as having had pages pinned (`MMF_HAS_PINNED`, 5.9–5.12
    /// `mm->has_pinned`): sticky, and what makes fork() copy maybe-pinned pages eagerly.
    pub has_pinned: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
    /// NOTIFIER/INTERVAL record: the ops table and the callbacks (0 = NULL).
    pub ops: u64,
    pub callbacks: [u64; 5],
    /// INTERVAL record: the interval, `[start, last]` (user addresses, `last` inclusive, as the tree stores it).
    pub start: u64,
    pub last: u64,
}

/// [`SubscriberLayout::has_pinned_bit`]: the flag is the whole `atomic_t mm->has_pinned` (5.9–5.12).
pub const HAS_PINNED_WORD: u32 = u32::MAX;
/// [`SubscriberLayout::has_pinned_bit`]: this kernel's bit number is not known; nothing reads the flag.
pub const HAS_PINNED_UNKNOWN: u32 = u32::MAX - 1;

/// Indices into [`SubscriberRecord::callbacks`] of a NOTIFIER record.
pub mod callback_slot {
    pub const RELEASE: usize = 0;
    pub const INVALIDATE_RANGE_START: usize = 1;
    pub const INVALIDATE_RANGE_END: usize = 2;
    pub const SECONDARY_TLB: usize = 3;
    /// `change_pte`: only kernels whose `mmu_notifier_ops` has it (removed in 2024).
    pub const CHANGE_PTE: usize = 4;
}

/// Offsets the inventory program needs beyond [`crate::KernelLayout`] (which supplies the
/// task → memory cgroup walk, `mm->owner` and the notifier list offsets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberLayout {
    /// `task_struct.pid`, `.tgid`, `.comm`.
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_comm: u32,
    /// `mm_struct.pinned_vm` (`atomic64_t`).
    pub mm_pinned_vm: u32,
    /// Where the has-pinned flag is: `mm_struct.flags` (bit [`Self::has_pinned_bit`]) or, on 5.9–5.12, the
    /// `atomic_t mm_struct.has_pinned` ([`HAS_PINNED_WORD`]).
    pub mm_has_pinned: u32,
    /// The bit number of `MMF_HAS_PINNED` in the flags word, [`HAS_PINNED_WORD`] or [`HAS_PINNED_UNKNOWN`].
    pub has_pinned_bit: u32,
    /// `mmu_notifier_subscriptions.itree` plus `rb_root_cached.rb_root` (its `rb_node`), and plus
    /// `rb_root_cached.rb_leftmost`, where the in-order walk starts. The walk's other offsets are the
    /// interval-notifier group's of [`crate::KernelLayout`] (`itree_*`, `interval_sub_ops`, `interval_ops_invalidate`).
    pub itree_root: u32,
    pub itree_leftmost: u32,
    /// `mmu_notifier_ops.release`, `.invalidate_range_start`, `.invalidate_range_end`.
    pub ops_release: u32,
    pub ops_start: u32,
    pub ops_end: u32,
    /// `mmu_notifier_ops.change_pte`, or [`NO_CHANGE_PTE`] where BTF has no such member (nothing reads it then).
    pub ops_change_pte: u32,
}

/// [`SubscriberLayout::ops_change_pte`] of a kernel without the op.
pub const NO_CHANGE_PTE: u32 = u32::MAX;

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::SubscriberRecord {}
    unsafe impl aya::Pod for super::SubscriberLayout {}
}

/// Where the interval-tree walk is between two steps (a per-CPU scratch value, so that the verifier sees one state
/// per step rather than one per reachable position and count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItreeWalk {
    /// The current `rb_node`.
    pub node: u64,
    /// [`itree_step`].
    pub step: u64,
    /// INTERVAL records written for this mm.
    pub emitted: u64,
}

/// [`ItreeWalk::step`]: what the next step of the in-order walk (the kernel's `rb_next`) does.
pub mod itree_step {
    /// Report `node`, then go to its right subtree's leftmost node, or climb.
    pub const EMIT: u64 = 0;
    /// Go down left from `node` while there is a left child, then report.
    pub const DESCEND: u64 = 1;
    /// Climb from `node`: while it is its parent's right child keep climbing; a left child's parent is next.
    pub const CLIMB: u64 = 2;
}
