//! Tracepoint fallback for the bracket family: `kvm:kvm_unmap_hva_range`, emitted at the top
//! of KVM's `invalidate_range_start` callback, once per VM per bracket. No end, no mm and no
//! event type, so it counts per *current* task's memory cgroup only, with the cause the
//! task's context gives (system call, fault, kernel thread, reclaim).

use aya_ebpf::{
    helpers::{
        bpf_get_current_task,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};
use mmuscope_abi::{EVENT_UNKNOWN, KvmUnmapKey, StackKey, StackKind};

use crate::{
    cause,
    cgroup::{current_memcg_btf, task_memcg},
    layout_field,
    maps::{KVM_UNMAP_COUNTS, LAYOUT, per_cpu_entry},
    regs, stacks,
};

#[inline(always)]
fn count_current(ctx: &TracePointContext) {
    let layout = LAYOUT.load();
    let (cgroup_id, flags) = task_memcg(&layout, unsafe { bpf_get_current_task() });
    let cause = cause::current(&layout, 0, 0, regs::user_regs(&layout));
    if stacks::armed() {
        stacks::capture(
            ctx,
            StackKind::Invalidation,
            StackKey::invalidation_detail(EVENT_UNKNOWN, cause),
            cgroup_id,
            flags,
        );
    }
    count(KvmUnmapKey { cgroup_id, flags, cause });
}

#[inline(always)]
fn count(key: KvmUnmapKey) {
    if let Some(p) = per_cpu_entry(&KVM_UNMAP_COUNTS, &key, &0) {
        unsafe { *p += 1 };
    }
}

/// The same count with the task's fields read by direct BTF loads instead of helper calls (the hot path on hosts
/// without trampolines; see `cgroup::load`).
#[btf_tracepoint]
pub fn kvm_unmap_tp_btf(ctx: BtfTracePointContext) -> i32 {
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let (cgroup_id, flags) = current_memcg_btf(task);
    let regs = if layout_field!(cause_context) == 0 {
        core::ptr::null()
    } else {
        unsafe { bpf_task_pt_regs(task as *mut _) as *const u8 }
    };
    let cause = cause::current_btf(task, regs);
    if stacks::armed() {
        let detail = StackKey::invalidation_detail(EVENT_UNKNOWN, cause);
        stacks::capture(&ctx, StackKind::Invalidation, detail, cgroup_id, flags);
    }
    count(KvmUnmapKey { cgroup_id, flags, cause });
    0
}

#[tracepoint]
pub fn kvm_unmap_tracepoint(ctx: TracePointContext) -> u32 {
    count_current(&ctx);
    0
}
