//! Tracepoint fallback for the bracket family: `kvm:kvm_unmap_hva_range`, emitted at the top
//! of KVM's `invalidate_range_start` callback, once per VM per bracket. No end, no mm and no
//! event type, so it counts per *current* task's memory cgroup only, with the cause the
//! task's context gives (system call, fault, kernel thread, reclaim).

use aya_ebpf::{
    helpers::bpf_get_current_task,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use mmuscope_abi::KvmUnmapKey;

use crate::{
    cause,
    cgroup::task_memcg,
    maps::{KVM_UNMAP_COUNTS, LAYOUT, per_cpu_entry},
};

#[inline(always)]
fn count_current() {
    let layout = LAYOUT.load();
    let (cgroup_id, flags) = task_memcg(&layout, unsafe { bpf_get_current_task() });
    let key = KvmUnmapKey { cgroup_id, flags, cause: cause::current(&layout, 0, cause::user_regs(&layout)) };
    if let Some(p) = per_cpu_entry(&KVM_UNMAP_COUNTS, &key, &0) {
        unsafe { *p += 1 };
    }
}

#[btf_tracepoint]
pub fn kvm_unmap_tp_btf(_ctx: BtfTracePointContext) -> i32 {
    count_current();
    0
}

#[tracepoint]
pub fn kvm_unmap_tracepoint(_ctx: TracePointContext) -> u32 {
    count_current();
    0
}
