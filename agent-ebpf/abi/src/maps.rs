//! Map keys and values.

use crate::histogram::HIST_BUCKETS;

/// Bits of [`BracketKey::flags`] and [`CgroupKey::flags`].
pub mod key_flags {
    /// `MMU_NOTIFIER_RANGE_BLOCKABLE` was set on the range. (A `#define`, so not in BTF; it
    /// has been bit 0 since the flag was introduced in 5.2.)
    pub const BLOCKABLE: u32 = 1 << 0;
    /// The cgroup id is from the default (v2) hierarchy because the task had no memory css.
    pub const DEFAULT_HIERARCHY: u32 = 1 << 1;
    /// The owner of the mm could not be read: the cgroup id is 0.
    pub const NO_OWNER: u32 = 1 << 2;
    /// `mm->owner` was NULL (its last user is exiting): attributed to the current task.
    pub const OWNER_FROM_CURRENT: u32 = 1 << 3;
}

/// Aggregation key of completed invalidation brackets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BracketKey {
    /// Cgroup id (kernfs node id) of the memory cgroup of the mm's owner.
    pub cgroup_id: u64,
    /// Raw `enum mmu_notifier_event` value; user space names it from BTF.
    pub event: u32,
    pub flags: u32,
    /// [`crate::Cause`] as u32.
    pub cause: u32,
    /// Which subscriber kinds the bracket reached: a [`subscriber_mask`] (bit = slot of `SUBSCRIBER_SLOTS`).
    pub subscribers: u32,
}

/// The `subscriber` dimension: a bracket's key carries a mask of the subscribers it reached, one bit per *ops*
/// (a driver's `mmu_notifier_ops` or `mmu_interval_notifier_ops`, static per driver, so the bits are bounded by the
/// drivers loaded, not by the processes using them). The programs give an ops the first free slot of
/// `SUBSCRIBER_SLOTS` when they first meet it, with the callback user space names it by; user space turns each bit
/// into the slot's subscriber kind (`kvm`, the module, ...), which folds several ops of one kind into one label.
pub mod subscriber_mask {
    /// Slots the programs hand out (bits 0..SLOTS); ops met after they ran out set [`OTHER`].
    pub const SLOTS: u32 = 31;
    /// An ops without a slot, or a subscriber that could not be read.
    pub const OTHER: u32 = 1 << 31;
}

/// A slot of `SUBSCRIBER_SLOTS`: the ops that holds it and the callback that names its kind (the first non-NULL of
/// `invalidate_range_start`, `_end`, the secondary-TLB op; an interval notifier's `invalidate`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubscriberSlot {
    pub ops: u64,
    pub callback: u64,
}

/// Per-CPU statistics of completed brackets for one [`BracketKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BracketStats {
    pub count: u64,
    pub sum_ns: u64,
    pub buckets: [u64; HIST_BUCKETS],
}

impl Default for BracketStats {
    fn default() -> Self {
        Self { count: 0, sum_ns: 0, buckets: [0; HIST_BUCKETS] }
    }
}

impl BracketStats {
    /// Counts one bracket of `ns` nanoseconds (the eBPF side does this per event).
    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        self.count += 1;
        self.sum_ns += ns;
        if let Some(b) = self.buckets.get_mut(crate::log2_bucket(ns) as usize) {
            *b += 1;
        }
    }

    /// Adds `other` (another CPU's or another key's statistics) into `self`.
    pub fn merge(&mut self, other: &Self) {
        self.count = self.count.saturating_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// Statistics of the given bracket durations (tests and samples).
    pub fn of(values: &[u64]) -> Self {
        let mut s = Self::default();
        for v in values {
            s.record(*v);
        }
        s
    }
}

/// An invalidation bracket between `invalidate_range_start` and the return of `_end`,
/// keyed by the address of its `struct mmu_notifier_range` (a stack object, unique while live).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InflightBracket {
    pub t_start_ns: u64,
    pub key: BracketKey,
}

/// Who started an invalidation of memory owned by another cgroup.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// A kernel thread (no mm of its own): kswapd, kcompactd, khugepaged, kworkers.
    Kthread = 0,
    /// A task of another memory cgroup (direct reclaim, process_madvise, /proc/pid/clear_refs).
    OtherCgroup = 1,
}

/// Aggregation key of cross-cgroup brackets: the owner's cgroup and the initiator kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CrossKey {
    pub cgroup_id: u64,
    pub flags: u32,
    /// [`Initiator`] as u32.
    pub initiator: u32,
}

/// Aggregation key of plain per-cgroup counters (tracepoint mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CgroupKey {
    pub cgroup_id: u64,
    pub flags: u32,
    pub _pad: u32,
}

/// Aggregation key of `kvm:kvm_unmap_hva_range` events (tracepoint mode): the current task's
/// memory cgroup and the cause of the invalidation.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KvmUnmapKey {
    pub cgroup_id: u64,
    pub flags: u32,
    /// [`crate::Cause`] as u32.
    pub cause: u32,
}

/// Indexes of the per-CPU `COUNTERS` array: the programs' own error and drop accounting.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A bracket ended whose start was not seen (attached mid-bracket, or an LRU eviction).
    EndWithoutStart = 0,
    /// `invalidate_range_start` returned non-zero: no `_end` follows (non-blocking callers).
    StartFailed = 1,
    /// An aggregation map was full and a new key could not be inserted.
    MapFull = 2,
    /// A kernel read failed while walking mm → owner → cgroup.
    ReadFault = 3,
    /// The in-flight bracket table was full.
    InflightFull = 4,
    /// The slow-bracket ring buffer was full: a record was dropped.
    SlowDropped = 5,
}

impl Counter {
    pub const COUNT: u32 = 6;
    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::EndWithoutStart,
        Counter::StartFailed,
        Counter::MapFull,
        Counter::ReadFault,
        Counter::InflightFull,
        Counter::SlowDropped,
    ];
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::BracketKey {}
    unsafe impl aya::Pod for super::SubscriberSlot {}
    unsafe impl aya::Pod for super::BracketStats {}
    unsafe impl aya::Pod for super::InflightBracket {}
    unsafe impl aya::Pod for super::CgroupKey {}
    unsafe impl aya::Pod for super::KvmUnmapKey {}
    unsafe impl aya::Pod for super::CrossKey {}
}

/// A fork in progress on one thread: from `dup_mmap` entry to its return (tracepoint mode: from
/// the first eager copy in the clone system call to `task_newtask`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkWindow {
    /// Memory cgroup of the parent mm's owner (`mm->owner`), in every mode.
    pub key: CgroupKey,
    /// Pages copied eagerly because they may be DMA-pinned (`copy_present_page`).
    pub copies: u64,
    /// PMD-mapped THPs split because they may be pinned (`copy_huge_pmd` → `__split_huge_pmd`).
    pub thp_splits: u64,
}

/// What one `ARM_REQUESTS` record (a `u64`) asks the agent to attach at once: an event that only an observed mm
/// makes found that group of on-demand hooks detached.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmRequest {
    /// A fork of an mm with the has-pinned flag while the fork-copy hook was detached.
    ForkCopy = 1,
    /// A notifier registration (classic or interval) while the subscription hooks were detached.
    Subscriptions = 2,
}

impl ArmRequest {
    pub fn from_raw(raw: u64) -> Option<Self> {
        match raw {
            1 => Some(Self::ForkCopy),
            2 => Some(Self::Subscriptions),
            _ => None,
        }
    }
}

/// Per-CPU fork statistics of one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ForkStats {
    /// Forks (address-space copies) that copied or split anything; the others leave no entry.
    pub forks: u64,
    /// Forks that copied at least one page eagerly.
    pub forks_with_copies: u64,
    pub copies: u64,
    pub thp_splits: u64,
    /// Forks of an address space with the has-pinned flag while the per-page copy hook was detached (the agent
    /// attaches it only while some mm has that flag): their copies were not counted.
    pub unobserved: u64,
}

#[cfg(feature = "user")]
mod fork_pod {
    unsafe impl aya::Pod for super::ForkWindow {}
    unsafe impl aya::Pod for super::ForkStats {}
}
