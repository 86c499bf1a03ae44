//! Interval notifiers (`mmu_interval_notifier`, used by GPU and RDMA drivers through HMM):
//! readers that had to wait for an invalidation in flight, `hmm_range_fault` collisions, and
//! brackets that reached interval subscribers.

/// Aggregation key of interval-reader waits: the owner cgroup of the notifier's mm and the
/// subscriber (address of its `ops->invalidate` callback; user space names it from kallsyms).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IntervalKey {
    pub cgroup_id: u64,
    pub flags: u32,
    pub _pad: u32,
    pub invalidate_fn: u64,
}

/// A `mmu_interval_read_begin` call in progress on one thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntervalRead {
    pub t_start_ns: u64,
    /// The `struct mmu_interval_notifier *`.
    pub sub: u64,
    /// 1 when an invalidation of the notifier was in flight at entry: the call sleeps until it ends.
    pub waiting: u32,
    pub _pad: u32,
}

/// Key of the last sequence a thread's `mmu_interval_read_begin` returned on one notifier.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReadSeqKey {
    /// The `struct mmu_interval_notifier *`.
    pub sub: u64,
    pub tid: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::IntervalKey {}
    unsafe impl aya::Pod for super::IntervalRead {}
    unsafe impl aya::Pod for super::ReadSeqKey {}
}
