//! Reference programs for `cargo xtask bench madvise`, loaded by `mmuscope-bench-fixture` (tests crate), never by
//! the agent:
//!
//! * the floor: two empty programs (`floor_tp_btf`, `floor_tracepoint`) attached to every hook the agent uses in
//!   tracepoint mode (the fixture takes the hook list from `mmuscope check --mode tracepoint --json`), the cost of
//!   merely having a program there;
//! * the count: the least a per-cgroup counter can do on `tp_btf/kvm_unmap_hva_range` (one helper for the current
//!   task's cgroup id, one per-CPU hash update), to tell what attribution itself costs against the agent's extra
//!   work (memory-cgroup walk, cause, flags).
//!
//! A `tp_btf` program is bound to its tracepoint when it is loaded, so the fixture loads `floor_tp_btf` (or
//! `floor_count_tp_btf`) once per hook.

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_get_current_cgroup_id,
    macros::{btf_tracepoint, map, tracepoint},
    maps::PerCpuHashMap,
    programs::{BtfTracePointContext, TracePointContext},
};

/// Events per cgroup id (default hierarchy) for `floor_count_tp_btf`. Preallocated like the agent's
/// `KVM_UNMAP_COUNTS`, so both pay the same kind of update; the bench's few cgroups fit many times over.
#[map]
static FLOOR_COUNTS: PerCpuHashMap<u64, u64> = PerCpuHashMap::with_max_entries(256, 0);

#[btf_tracepoint]
pub fn floor_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[tracepoint]
pub fn floor_tracepoint(_ctx: TracePointContext) -> u32 {
    0
}

#[btf_tracepoint]
pub fn floor_count_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    // SAFETY: a helper without arguments, allowed in tracing programs.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    match FLOOR_COUNTS.get_ptr_mut(cgroup) {
        // SAFETY: this CPU's slot of a live entry; per-CPU, so no other writer.
        Some(n) => unsafe { *n += 1 },
        // A cgroup's first event on this CPU; an insert lost to another CPU's only costs that one count.
        None => {
            let _ = FLOOR_COUNTS.insert(cgroup, 1, u64::from(BPF_NOEXIST));
        }
    }
    0
}
