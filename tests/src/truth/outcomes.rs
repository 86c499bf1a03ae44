//! Truth about what happened to pages rather than to notifier brackets: fork copies of pinned pages, THP splits,
//! swap-out, and invalidations initiated from another cgroup. Measured by the workload itself (PFNs from
//! `/proc/self/pagemap`, `AnonHugePages` from `/proc/self/smaps`), not predicted.

use serde::{Deserialize, Serialize};

use crate::cgroup::CgroupPlacement;
use crate::truth::SecondaryTlbApi;
use std::collections::BTreeMap;

/// One fork() of a process whose region may have been pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkTruth {
    pub forks: u64,
    pub child_pid: u32,
    /// Pages of the region compared between parent and child.
    pub pages: u64,
    /// Pages registered with `IORING_REGISTER_BUFFERS` (long-term pin) at fork time.
    pub pinned_pages: u64,
    /// Pages whose PFN in the child differs from the parent's: copied eagerly by fork.
    pub copied_pages: u64,
    pub copied_bytes: u64,
    /// 1 if this fork copied at least one page eagerly, else 0 (`forks_with_pinned_pages_total`).
    pub forks_with_pinned_pages: u64,
    /// PMD-mapped THPs of the parent's region that fork split (parent `AnonHugePages` before − after, in THPs).
    pub thp_splits: u64,
    pub kernel_path: String,
    /// The forking thread's memory cgroup when it was not the mm owner's (`--fork-from-sibling-memcg`): the fork
    /// families must count nothing there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forker_cgroup: Option<String>,
}

/// One fork() of a process with private anonymous hugetlb pages, which may have been pinned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HugetlbForkTruth {
    pub child_pid: u32,
    /// Huge pages of the region compared between parent and child.
    pub huge_pages: u64,
    /// Bytes of one huge page (`Hugepagesize` of `/proc/meminfo`, the size `MAP_HUGETLB` maps).
    pub huge_page_bytes: u64,
    /// Huge pages registered with `IORING_REGISTER_BUFFERS` (long-term pin) at fork time.
    pub pinned_huge_pages: u64,
    /// Huge pages whose PFNs in the child differ from the parent's: copied eagerly by fork.
    pub copied_huge_pages: u64,
    pub copied_bytes: u64,
    pub kernel_path: String,
}

/// Pages moved to swap by the scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapTruth {
    /// Pages advised with `MADV_PAGEOUT`.
    pub advised_pages: u64,
    /// Pages whose `/proc/self/pagemap` entry showed a swap entry (bit 62) right after the advice.
    pub swapped_pages: u64,
    /// The swap area used (`/proc/swaps` file name).
    pub swap_device: String,
}

/// Invalidations of this process's mm started by a task in another cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossCgroupTruth {
    /// The initiating process (its brackets carry `initiator_pid` in the sources).
    pub initiator_pid: u32,
    /// `None`: a kernel thread (ksmd), which sits in no cgroup the run made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiator_cgroups: Option<CgroupPlacement>,
    /// `cross_cgroup_invalidations_total{initiator="other_cgroup"}` for the owner cgroup (`GroundTruth::cgroups`).
    pub invalidations: u64,
    /// The `initiator` label value.
    pub initiator_kind: String,
}

/// What an interval-notifier subscriber (the project's HMM mirror test module) saw, counted by the module itself
/// (its `MIRROR_STATUS` counters) and cross-checked by the workload against what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalTruth {
    /// Brackets that hit the interval: `ops->invalidate` calls.
    pub invalidations: u64,
    /// Brackets on the same mm that miss the interval and that the workload issued (its own madvise calls; the
    /// process makes others too, e.g. thread stacks, none of which reach a subscriber either).
    pub misses: u64,
    /// Of those, issued while an invalidation of the interval was held in flight (`invalidate_seq` odd).
    pub concurrent_misses: u64,
    /// `mmu_interval_read_begin` calls that slept until an invalidation ended (confirmed by the module).
    pub read_waits: u64,
    /// `mmu_interval_read_retry` calls that said "retry".
    pub read_retries: u64,
    /// `hmm_range_fault` calls that returned -EBUSY.
    pub hmm_busy: u64,
    /// Whether `read_waits` and `hmm_busy` depend on timing the workload cannot know (invalidations while a driver
    /// faults, `rdma-odp --concurrent`): then they are 0 here and say nothing; the guest check's trace reference
    /// (kprobes on `mmu_interval_read_begin` and `hmm_range_fault`) counts them and the agent must equal it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub collisions_timed: bool,
    /// Read collisions: `mmu_interval_read_begin` calls of a task on the notifier after an invalidation of it since
    /// the task's previous one (each retry and -EBUSY is one, so `read_retries + hmm_busy <= read_collisions`).
    /// `None`: the subscriber cannot say (rxe's ODP faults run in whichever task processes the work request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_collisions: Option<u64>,
    pub kernel_path: String,
    /// The interval notifiers the workload holds on its mm while it holds (`--hold`), in address order: what the
    /// subscriber inventory must list (empty where the scenario does not say).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifiers: Vec<IntervalRange>,
}

/// One interval notifier's interval as the kernel's interval tree stores it: first and last byte address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IntervalRange {
    pub start: u64,
    pub last: u64,
}

impl IntervalRange {
    /// `[addr, addr + len)`.
    pub fn of(addr: u64, len: u64) -> Self {
        Self { start: addr, last: addr + len - 1 }
    }
}

/// What the test module's secondary-TLB subscriber received (its `MIRROR_TLB_STATUS` counters): a notifier on the
/// scenario's mm that implements only the running kernel's secondary-TLB op. The workload checks it against the
/// scenario's [`crate::truth::SecondaryTlbTruth`] for the kernel's API; the guest check compares the agent with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlbSubscriberTruth {
    /// The op the module implements (it is built per kernel).
    pub api: SecondaryTlbApi,
    /// Calls of the op.
    pub calls: u64,
    /// Of them, over the whole address space `(0, ~0UL)`.
    pub full_mm: u64,
    /// Bytes of the other calls.
    pub range_bytes: u64,
}

/// `change_pte` notifications the scenario's mm received, counted from the kernel source of what it did: by whether
/// the caller had a bracket of the same mm open (every caller in the kernels read does).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangePteTruth {
    pub bracket: u64,
    pub outside: u64,
    /// Where each one comes from (the kernel functions that call `set_pte_at_notify`).
    pub sources: String,
}

/// The subscriber kind of KVM's notifiers.
pub const KVM_KIND: &str = "kvm";

/// The subscriber kind of the test module (`tests/kmod/mmuscope_mirror/`): the agent names a module's notifiers by
/// the module.
pub const MIRROR_KIND: &str = "mmuscope_mirror";

/// Brackets split by the `subscriber` label, for a scenario whose mm has subscribers that not every bracket
/// reaches (a KVM VM over the whole region and an interval notifier over part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriberSplitTruth {
    /// Brackets per `subscriber` value (`kvm`, `kvm+mmuscope_mirror`), every value listed.
    pub brackets: BTreeMap<String, u64>,
    /// The `subscriber` of every double notification and avoided call of the scenario.
    pub doubles: String,
}
