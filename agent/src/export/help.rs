//! Name and help text of every metric family the exporter can produce (the registry's
//! descriptors and the generated metrics reference both come from here).

/// `(name, help)` of every family, in exposition order.
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "mmuscope_invalidations_total",
        "Completed mmu_notifier invalidation brackets, by owner memory cgroup, event type, cause and whether the range was blockable. cause comes from caller hooks (thp_split, reclaim, migration, numa, soft_dirty, userfaultfd, exit; fentry and kprobe modes), else from the task's context: the system call (madvise, munmap, mremap, mprotect, fork, exit, migration, other_syscall), page_fault, reclaim (direct reclaim), or a kernel thread by name (reclaim for kswapd, migration for kcompactd, khugepaged, ksm for ksmd, else kthread). In tracepoint mode: kvm_unmap_hva_range events (one per VM per bracket), event and blockable unknown, cause from the context only.",
    ),
    (
        "mmuscope_invalidation_duration_seconds",
        "Time from __mmu_notifier_invalidate_range_start entry to __mmu_notifier_invalidate_range_end return, by owner memory cgroup and event type (fentry and kprobe modes).",
    ),
    (
        "mmuscope_subscriber_callback_duration_seconds",
        "Time spent in each subscriber's invalidation callbacks (invalidate_range_start, invalidate_range_end, and invalidate_range before 6.6 / arch_invalidate_secondary_tlbs from 6.6), by subscriber (from the callback symbol, e.g. kvm) and callback. kprobe/kretprobe on the callbacks resolved at start-up; not on kernels without kprobes.",
    ),
    (
        "mmuscope_secondary_tlb_invalidations_total",
        "Secondary-TLB invalidations (__mmu_notifier_arch_invalidate_secondary_tlbs on 6.6+, __mmu_notifier_invalidate_range and the ->invalidate_range repeat inside invalidate_range_end before 6.6), by owner memory cgroup, scope (range or full_mm) and context (bracket, gather, outside).",
    ),
    (
        "mmuscope_double_notifications_total",
        "Secondary-TLB ranges invalidated again within one operation, by mechanism: end_after_in_lock (pre-6.6 in-lock call then invalidate_range_end), end_then_gather (pre-6.6 invalidate_range_end then the TLB-gather flush), overlapping_secondary_tlb (overlapping calls in one bracket or gather window; counted only when a subscriber implements the callback), overlapping_brackets (a bracket overlapping an earlier one on the same mm in the same system call or page fault of a user thread, which start/end subscribers such as KVM invalidate twice; fentry and kprobe modes).",
    ),
    (
        "mmuscope_redundant_invalidation_bytes_total",
        "Bytes invalidated more than once, by mechanism (see double_notifications_total).",
    ),
    (
        "mmuscope_double_notifications_avoided_total",
        "invalidate_range_end calls with only_end set (pre-6.6), which skip the repeated ->invalidate_range.",
    ),
    (
        "mmuscope_cross_cgroup_invalidations_total",
        "Invalidation brackets on memory owned by this cgroup but started by a kernel thread (initiator=kthread: kswapd, kcompactd, khugepaged, kworkers) or by a task of another memory cgroup (initiator=other_cgroup: direct reclaim, process_madvise, clear_refs). fentry and kprobe modes.",
    ),
    (
        "mmuscope_fork_pinned_page_copies_total",
        "Pages copied eagerly at fork() because the parent's page may be DMA-pinned (MMF_HAS_PINNED and folio_maybe_dma_pinned), by the parent mm owner's memory cgroup.",
    ),
    ("mmuscope_fork_pinned_copy_bytes_total", "Bytes of those eager fork copies."),
    (
        "mmuscope_fork_pinned_thp_splits_total",
        "PMD-mapped THPs split at fork() because they may be pinned (fentry and kprobe modes).",
    ),
    (
        "mmuscope_forks_with_pinned_pages_total",
        "Address-space copies (fork) that copied at least one maybe-pinned page eagerly.",
    ),
    (
        "mmuscope_interval_read_waits_total",
        "mmu_interval_read_begin calls that had to wait for an invalidation of their interval notifier in flight (GPU/RDMA drivers through HMM), by owner memory cgroup and subscriber (the notifier's ops->invalidate symbol). fentry and kprobe modes; no interval subscriber exists on a host without such drivers.",
    ),
    (
        "mmuscope_interval_read_wait_seconds",
        "Time those mmu_interval_read_begin calls waited, by owner memory cgroup and subscriber.",
    ),
    (
        "mmuscope_hmm_range_fault_busy_total",
        "hmm_range_fault calls that returned -EBUSY because an invalidation collided with the fault, by owner memory cgroup (kernels built with HMM).",
    ),
    (
        "mmuscope_interval_invalidations_total",
        "Invalidation brackets that reached at least one interval notifier (the subscriptions' invalidate_seq was odd after invalidate_range_start), by owner memory cgroup. fentry and kprobe modes.",
    ),
    (
        "mmuscope_invalidation_start_failures_total",
        "invalidate_range_start calls that returned an error (non-blocking callers such as the OOM reaper); no end follows.",
    ),
    (
        "mmuscope_unmatched_bracket_ends_total",
        "Bracket ends whose start was not seen (agent attached mid-bracket, or in-flight table eviction).",
    ),
    (
        "mmuscope_notifier_subscriptions",
        "Registered mmu_notifier subscriptions by subscriber (from the callback symbols, e.g. kvm = one per VM). Interval notifiers count once per mm, under the kind of the first one's invalidate callback (interval if unknown). From the task-iterator inventory.",
    ),
    (
        "mmuscope_pinned_mms",
        "Address spaces with long-term pinned pages (mm->pinned_vm > 0: io_uring fixed buffers, RDMA, VFIO/iommufd), by owner memory cgroup. From the task-iterator inventory.",
    ),
    ("mmuscope_probe_read_errors_total", "Kernel memory reads that failed while attributing an event to a cgroup."),
    ("mmuscope_map_update_errors_total", "Map updates that failed because the map was full, by map."),
    (
        "mmuscope_map_read_errors_total",
        "Reads of a kernel map that failed (the scrape or API request that needed it failed too), by map.",
    ),
    ("mmuscope_map_capacity", "max_entries of the aggregation maps, by map."),
    ("mmuscope_map_entries", "Entries currently in the aggregation maps, by map."),
    (
        "mmuscope_probe_attached",
        "1 if the probe family is attached with this alternative, 0 if the alternative is not in use.",
    ),
    ("mmuscope_build_info", "Build and kernel facts; value 1."),
    (
        "mmuscope_cgroups_tracked",
        "Cgroups that have their own series now (at most --max-cgroups; the rest are aggregated into cgroup=\"other\").",
    ),
    (
        "mmuscope_cgroups_overflow_total",
        "Distinct cgroups aggregated into cgroup=\"other\" because --max-cgroups was reached.",
    ),
    (
        "mmuscope_bpf_program_run_seconds_total",
        "Time the kernel spent running each of the agent's eBPF programs (only with --bpf.run-stats: BPF_ENABLE_STATS, held for the agent's lifetime; needs CAP_SYS_ADMIN).",
    ),
    (
        "mmuscope_bpf_program_runs_total",
        "Runs of each of the agent's eBPF programs (only with --bpf.run-stats: BPF_ENABLE_STATS).",
    ),
    ("mmuscope_scrape_duration_seconds", "Time spent reading the kernel maps and building this scrape."),
];
/// Help text of `name` ("" for an unknown name, which a unit test rules out).
pub fn help(name: &str) -> &'static str {
    FAMILIES.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h)
}
