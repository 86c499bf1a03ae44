//! Name and help text of every metric family the exporter can produce (the registry's
//! descriptors and the generated metrics reference both come from here).

/// `(name, help)` of every family, in exposition order.
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "mmuscope_invalidations_total",
        "Completed mmu_notifier invalidation brackets, by owner memory cgroup, event type and whether the range was blockable. In tracepoint mode: kvm_unmap_hva_range events (one per VM per bracket), event and blockable unknown.",
    ),
    (
        "mmuscope_invalidation_duration_seconds",
        "Time from __mmu_notifier_invalidate_range_start entry to __mmu_notifier_invalidate_range_end return, by owner memory cgroup and event type (fentry and kprobe modes).",
    ),
    (
        "mmuscope_invalidation_start_failures_total",
        "invalidate_range_start calls that returned an error (non-blocking callers such as the OOM reaper); no end follows.",
    ),
    (
        "mmuscope_unmatched_bracket_ends_total",
        "Bracket ends whose start was not seen (agent attached mid-bracket, or in-flight table eviction).",
    ),
    ("mmuscope_probe_read_errors_total", "Kernel memory reads that failed while attributing an event to a cgroup."),
    ("mmuscope_map_update_errors_total", "Map updates that failed because the map was full, by map."),
    ("mmuscope_map_capacity", "max_entries of the aggregation maps, by map."),
    ("mmuscope_map_entries", "Entries currently in the aggregation maps, by map."),
    (
        "mmuscope_probe_attached",
        "1 if the probe family is attached with this alternative, 0 if the alternative is not in use.",
    ),
    ("mmuscope_build_info", "Build and kernel facts; value 1."),
    ("mmuscope_scrape_duration_seconds", "Time spent reading the kernel maps and building this scrape."),
];
/// Help text of `name` ("" for an unknown name, which a unit test rules out).
pub fn help(name: &str) -> &'static str {
    FAMILIES.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h)
}
