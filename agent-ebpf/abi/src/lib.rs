//! The binary interface between mmuscope's eBPF programs and its user-space agent.
//!
//! Everything here is `#[repr(C)]` and `no_std`: the same definitions are compiled into the
//! eBPF object (`bpfel-unknown-none`) and into the agent, so map keys, map values and the
//! load-time configuration cannot drift apart. With the `user` feature the types implement
//! [`aya::Pod`] so the agent can read them out of maps and write them as globals.
//!
//! Kernel struct offsets are never written here: they are resolved from the running kernel's
//! BTF by the agent and handed to the programs in [`KernelLayout`].
#![no_std]

mod births;
mod cause;
mod histogram;
mod interval;
mod layout;
mod maps;
mod secondary;
mod slow;
mod stacks;
mod subscribers;

pub use births::{CGROUP_PATH_BYTES, CgroupBirth};
pub use cause::{Cause, caller_stack};
pub use histogram::{HIST_BUCKETS, bucket_upper_bound_ns, log2_bucket};
pub use interval::{IntervalKey, IntervalRead, ReadSeqKey};
pub use layout::{KernelLayout, PAGE_MAPPING_KSM, is_ksm_page};
pub use maps::{
    ArmRequest, BracketKey, BracketStats, CgroupKey, Counter, CrossKey, ForkStats, ForkWindow, InflightBracket,
    Initiator, KvmUnmapKey, SubscriberSlot, key_flags, subscriber_mask,
};
pub use secondary::{
    ChangePteCounts, Context, CountBytes, DoubleKey, DoubleKind, Frame, Intervals, Operation, Overlap, Scope,
    SecondaryKey, ThreadState,
};
pub use slow::SlowBracket;
pub use stacks::{EVENT_UNKNOWN, STACK_DEPTH, STACK_LOST, StackFilter, StackKey, StackKind};
pub use subscribers::{
    HAS_PINNED_UNKNOWN, HAS_PINNED_WORD, ITER_BUFFER_BYTES, ItreeWalk, MAX_INTERVALS, MAX_NOTIFIERS, NO_CHANGE_PTE,
    SubscriberLayout, SubscriberRecord, callback_slot, itree_step, record_kind,
};

/// Names of the maps and globals the agent reads or writes one by one, shared so that a rename cannot break the agent
/// silently. The per-cgroup aggregation maps are named in the agent's `cgroup_maps` rows instead, which a unit test
/// holds against the object (names, sizes, type).
pub mod names {
    pub const LAYOUT: &str = "LAYOUT";
    pub const INFLIGHT: &str = "INFLIGHT";
    pub const COUNTERS: &str = "COUNTERS";
    pub const KPROBE_STASH: &str = "KPROBE_STASH";
    pub const FORK_WINDOWS: &str = "FORK_WINDOWS";
    pub const FORK_COPIES_ARMED: &str = "FORK_COPIES_ARMED";
    /// The subscription hooks' attach generation (0: detached); see `Arming` in the agent.
    pub const SUBSCRIPTIONS_ARMED: &str = "SUBSCRIPTIONS_ARMED";
    /// One [`super::ArmRequest`] per event that found an on-demand hook group detached.
    pub const ARM_REQUESTS: &str = "ARM_REQUESTS";
    pub const THREADS: &str = "THREADS";
    pub const CALLER_CAUSES: &str = "CALLER_CAUSES";
    pub const SYSCALL_CAUSES: &str = "SYSCALL_CAUSES";
    pub const OPERATIONS: &str = "OPERATIONS";
    pub const OPERATIONS_ON: &str = "OPERATIONS_ON";
    pub const CAUSES_ON: &str = "CAUSES_ON";
    pub const KSM_COW_ON: &str = "KSM_COW_ON";
    pub const INTERVAL_READS: &str = "INTERVAL_READS";
    pub const SLOW_EVENTS: &str = "SLOW_EVENTS";
    pub const SLOW_MIN_NS: &str = "SLOW_MIN_NS";
    /// Read-only global: 0 switches the on-demand stack capture off (`--stacks.disable`).
    pub const STACKS_ENABLED: &str = "STACKS_ENABLED";
    pub const SUBSCRIBER_LAYOUT: &str = "SUBSCRIBER_LAYOUT";
    pub const SUBSCRIBER_CHANGES: &str = "SUBSCRIBER_CHANGES";
    pub const CGROUP_BIRTHS: &str = "CGROUP_BIRTHS";
    pub const CALLBACK_STATS: &str = "CALLBACK_STATS";
    pub const SUBSCRIBER_SLOTS: &str = "SUBSCRIBER_SLOTS";
    pub const SUBSCRIBER_BITS: &str = "SUBSCRIBER_BITS";
    /// The writable data section holding the `StackFilter` (a one-slot array map).
    pub const STACK_FILTER: &str = ".data.stacks";
    pub const STACK_TRACES: &str = "STACK_TRACES";
    pub const STACK_COUNTS: &str = "STACK_COUNTS";
}
