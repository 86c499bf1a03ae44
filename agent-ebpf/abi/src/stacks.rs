//! On-demand kernel stacks (`/api/v1/stacks`): the filter the agent writes while a request runs, and the key of the
//! per-stack counts. Off (`armed == 0`) the programs pay one load of the filter and a branch.

/// What a stack was taken for; the bit `1 << kind` selects it in [`StackFilter::kinds`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StackKind {
    /// An invalidation bracket opening (`invalidate_range_start`), or in tracepoint mode KVM's
    /// `kvm_unmap_hva_range`, which its `invalidate_range_start` callback emits.
    Invalidation = 0,
    /// A double notification, of any [`crate::DoubleKind`].
    DoubleNotification = 1,
    /// A page copied eagerly at fork because it may be DMA-pinned.
    ForkCopy = 2,
}

impl StackKind {
    pub const ALL: [StackKind; 3] = [StackKind::Invalidation, StackKind::DoubleNotification, StackKind::ForkCopy];

    /// Its bit in [`StackFilter::kinds`].
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// What to capture. Lives alone in the writable data section `.data.stacks` (one array map with one slot, which
/// the agent updates through the fd it already holds: no capability needed after the drop).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackFilter {
    /// Non-zero while a stack request runs. The only field read when off.
    pub armed: u32,
    /// Bits of the [`StackKind`]s to capture.
    pub kinds: u32,
    /// Only events of this owner cgroup id (0: every cgroup).
    pub cgroup_id: u64,
}

/// [`StackKey::stack_id`] of events whose stack could not be stored (the stack map was full or its bucket held
/// another stack): counted, so that a response says how much it misses.
pub const STACK_LOST: u32 = u32::MAX;

/// Key of the per-stack counts: owner cgroup (with its [`crate::key_flags`]), kind and kernel stack id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub cgroup_id: u64,
    pub flags: u32,
    /// [`StackKind`] as u32.
    pub kind: u32,
    /// Id in the stack-trace map, or [`STACK_LOST`].
    pub stack_id: u32,
    /// For [`StackKind::DoubleNotification`], its [`crate::DoubleKind`] as u32 (doubles of each kind have their own
    /// stacks); for [`StackKind::Invalidation`], its event and cause ([`StackKey::invalidation_detail`], so that a
    /// request can keep some of them); 0 for fork copies.
    pub detail: u32,
}

/// The event of an invalidation whose `enum mmu_notifier_event` is not known (tracepoint mode: KVM's
/// `kvm_unmap_hva_range` carries none).
pub const EVENT_UNKNOWN: u32 = 0xffff;

impl StackKey {
    /// The `detail` of an invalidation: its event (or [`EVENT_UNKNOWN`]) in the low 16 bits, its [`crate::Cause`]
    /// above.
    pub const fn invalidation_detail(event: u32, cause: u32) -> u32 {
        (event & 0xffff) | (cause << 16)
    }

    /// The event and the cause of an invalidation's `detail`.
    pub const fn invalidation_parts(detail: u32) -> (u32, u32) {
        (detail & 0xffff, detail >> 16)
    }
}

/// Frames kept per stack (the innermost ones; the deepest reclaim paths seen are about 40).
pub const STACK_DEPTH: usize = 64;

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::StackFilter {}
    unsafe impl aya::Pod for super::StackKey {}
}
