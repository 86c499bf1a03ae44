//! Fork copies of pinned pages: while a thread copies an address space (`dup_mmap` or
//! `copy_process`, or a clone syscall in tracepoint mode), count the pages the kernel copies eagerly because they
//! may be DMA-pinned (`copy_present_page`, marked by its anon-rmap call or, in tracepoint mode,
//! by its order-0 `GFP_HIGHUSER_MOVABLE` allocation) and the pinned THPs it splits.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task},
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, tracepoint},
    programs::{BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext, TracePointContext},
};
use mmuscope_abi::{CgroupKey, ForkStats, ForkWindow};

use crate::{
    cgroup::task_memcg,
    maps::{FORK_STATS, FORK_WINDOWS, LAYOUT, per_cpu_entry},
};

#[inline(always)]
fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
fn open(cgroup: (u64, u32)) {
    let window =
        ForkWindow { key: CgroupKey { cgroup_id: cgroup.0, flags: cgroup.1, _pad: 0 }, copies: 0, thp_splits: 0 };
    let _ = FORK_WINDOWS.insert(tid(), window, 0);
}

#[inline(always)]
fn close() {
    let t = tid();
    let Some(w) = (unsafe { FORK_WINDOWS.get(t) }).copied() else { return };
    let _ = FORK_WINDOWS.remove(t);
    let Some(s) = per_cpu_entry(&FORK_STATS, &w.key, &ForkStats::default()) else { return };
    // SAFETY: per-CPU value owned by this CPU while the program runs.
    unsafe {
        (*s).forks += 1;
        (*s).copies += w.copies;
        (*s).thp_splits += w.thp_splits;
        if w.copies > 0 {
            (*s).forks_with_copies += 1;
        }
    }
}

#[inline(always)]
fn mark_copy() {
    if let Some(w) = FORK_WINDOWS.get_ptr_mut(tid()) {
        unsafe { (*w).copies += 1 };
    }
}

#[inline(always)]
fn mark_split() {
    if let Some(w) = FORK_WINDOWS.get_ptr_mut(tid()) {
        unsafe { (*w).thp_splits += 1 };
    }
}

/// The window opens at `dup_mmap` or, where that is inlined (Debian's 6.12), `copy_process`.
/// Both run in the forking task, whose memory cgroup is that of the mm being copied.
#[inline(always)]
fn open_for_current() {
    open(task_memcg(&LAYOUT.load(), unsafe { bpf_get_current_task() }));
}

#[fentry]
pub fn fork_window_fentry(_ctx: FEntryContext) -> i32 {
    open_for_current();
    0
}

#[fexit]
pub fn fork_window_fexit(_ctx: FExitContext) -> i32 {
    close();
    0
}

/// The anon-rmap call of each eager copy (`folio_add_new_anon_rmap` / `page_add_new_anon_rmap`).
#[fentry]
pub fn fork_copy_fentry(_ctx: FEntryContext) -> i32 {
    mark_copy();
    0
}

/// `__split_huge_pmd` inside the window: a maybe-pinned THP split at fork.
#[fentry]
pub fn fork_split_fentry(_ctx: FEntryContext) -> i32 {
    mark_split();
    0
}

#[kprobe]
pub fn fork_window_kprobe(_ctx: ProbeContext) -> u32 {
    open_for_current();
    0
}

#[kretprobe]
pub fn fork_window_kretprobe(_ctx: RetProbeContext) -> u32 {
    close();
    0
}

#[kprobe]
pub fn fork_copy_kprobe(_ctx: ProbeContext) -> u32 {
    mark_copy();
    0
}

#[kprobe]
pub fn fork_split_kprobe(_ctx: ProbeContext) -> u32 {
    mark_split();
    0
}

/// Tracepoint mode: `syscalls:sys_enter_{clone,clone3,fork,vfork}` open the window for the
/// forking task's memory cgroup; the matching `sys_exit_*` close it.
#[tracepoint]
pub fn fork_syscall_enter(_ctx: TracePointContext) -> u32 {
    open_for_current();
    0
}

#[tracepoint]
pub fn fork_syscall_exit(_ctx: TracePointContext) -> u32 {
    close();
    0
}

/// `kmem:mm_page_alloc(page, order, gfp, migratetype)`: one order-0 `GFP_HIGHUSER_MOVABLE`
/// allocation per eager copy (the prealloc of `copy_present_page`) while the window is open.
#[btf_tracepoint]
pub fn fork_page_alloc(ctx: BtfTracePointContext) -> i32 {
    let order: u32 = ctx.arg(1);
    let gfp: u32 = ctx.arg(2);
    let mask: u64 = crate::layout_field!(gfp_highuser_movable);
    if order == 0 && mask != 0 && (gfp as u64) & mask == mask {
        mark_copy();
    }
    0
}
