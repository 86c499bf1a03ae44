//! Fork copies of pinned pages: while a thread copies an address space (`dup_mmap` or
//! `copy_process`), count the pages the kernel copies eagerly because they may be DMA-pinned
//! (`copy_present_page`, marked by its anon-rmap call or, in tracepoint mode, by its order-0
//! `GFP_HIGHUSER_MOVABLE` allocation) and the pinned THPs it splits.
//!
//! Every per-copy hook sits on a path that every process takes (each anonymous fault adds an
//! anon rmap and allocates a page), so each one first asks the question that only a fork copy
//! answers "yes" to, with a few loads and no map lookup: is the rmap for another mm than the
//! current task's (fentry, kprobe), or is the task the parent inside a clone system call
//! (tracepoint mode)? Nothing here enables the system-call tracepoints, which would send every
//! system call on the host through the slow path.
//!
//! Even that early exit is a program run per page allocation or anonymous fault of every process, so the agent
//! attaches the per-copy hook (`fork_copy_*`, `fork_page_alloc`) only while some mm has the has-pinned flag: no
//! other mm's fork can copy eagerly. `task_newtask`, run once per fork, notes a fork of a flagged mm made while the
//! hook was detached (`FORK_COPIES_ARMED` is 0): it counts it as unobserved and asks the agent to attach now.

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_task,
        generated::{bpf_get_current_task_btf, bpf_task_pt_regs},
    },
    macros::{btf_tracepoint, fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, LruHashMap, PerCpuHashMap},
    programs::{
        BtfTracePointContext, FEntryContext, FExitContext, ProbeContext, RetProbeContext, tracing::StackIdContext,
    },
};
use mmuscope_abi::{ArmRequest, Cause, CgroupKey, ForkStats, ForkWindow, StackKind};

use crate::{
    cgroup::{current_owner_memcg_btf, current_task_mm, load, mm_owner_memcg, read},
    layout_field,
    maps::{LAYOUT, SYSCALL_CAUSES, per_cpu_entry, request_arming},
    stacks,
    subscribers::{SUBSCRIBER_LAYOUT, has_pinned},
    threads::tid,
};

/// Forks in progress, per thread id. LRU: in tracepoint mode a clone that fails after copying never
/// reaches `task_newtask`, and its record must not hold a slot forever.
#[map]
static FORK_WINDOWS: LruHashMap<u32, ForkWindow> = LruHashMap::with_max_entries(8192, 0);

/// Fork statistics per parent memory cgroup. Size set by the agent.
#[map]
static FORK_STATS: PerCpuHashMap<CgroupKey, ForkStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// 1 while the agent has the per-copy hook attached; 0 while it is detached because no mm has the has-pinned flag.
#[map]
static FORK_COPIES_ARMED: Array<u32> = Array::with_max_entries(1, 0);

/// `CLONE_VM` (uapi): a thread, or a vfork child, shares the mm; no address space is copied.
const CLONE_VM: u64 = 0x100;

/// Called at `task_newtask(task, clone_flags)` in the parent: a fork of an mm with the has-pinned flag while the
/// per-copy hook was detached may have copied pages that nobody counted. Counted per owner's memory cgroup, and
/// the agent is asked to attach.
#[inline(always)]
fn note_unobserved_fork(ctx: &BtfTracePointContext) {
    let clone_flags: u64 = ctx.arg(1);
    if clone_flags & CLONE_VM != 0 || FORK_COPIES_ARMED.get(0).is_some_and(|armed| *armed != 0) {
        return;
    }
    // Probe reads from `bpf_get_current_task`, not BTF loads: once per fork, and 5.10 lacks
    // `bpf_get_current_task_btf`.
    let layout = LAYOUT.load();
    let task = unsafe { bpf_get_current_task() };
    let mm = unsafe { read::<u64>(task, layout.task_mm) }.unwrap_or(0);
    let s = SUBSCRIBER_LAYOUT.load();
    if mm == 0 || !unsafe { has_pinned(&s, mm) }.unwrap_or(false) {
        return;
    }
    let (cgroup_id, flags) = mm_owner_memcg(&layout, mm);
    let key = CgroupKey { cgroup_id, flags, _pad: 0 };
    if let Some(stats) = per_cpu_entry(&FORK_STATS, &key, &ForkStats::default()) {
        // SAFETY: per-CPU value owned by this CPU while the program runs.
        unsafe { (*stats).unobserved += 1 };
    }
    request_arming(ArmRequest::ForkCopy);
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
    // A fork that copied and split nothing has nothing to report: no statistics entry per forking cgroup.
    if w.copies == 0 && w.thp_splits == 0 {
        return;
    }
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

/// Counts one eager copy in the thread's window (and, while a stack request runs, its stack).
#[inline(always)]
fn mark_copy<C: EbpfContext + StackIdContext>(ctx: &C) {
    if let Some(w) = FORK_WINDOWS.get_ptr_mut(tid()) {
        unsafe { (*w).copies += 1 };
        if stacks::armed() {
            let key = unsafe { (*w).key };
            stacks::capture(ctx, StackKind::ForkCopy, 0, key.cgroup_id, key.flags);
        }
    }
}

#[inline(always)]
fn mark_split() {
    if let Some(w) = FORK_WINDOWS.get_ptr_mut(tid()) {
        unsafe { (*w).thp_splits += 1 };
    }
}

/// The window opens at `dup_mmap` or, where that is inlined (Debian's 6.12), `copy_process`, both in the
/// forking task. Its key is the memory cgroup of the copied mm's owner, the cgroup the pinned memory is charged
/// to: on cgroup v1 the forking thread may sit in another memory cgroup than the owner.
#[inline(always)]
fn open_for_current() {
    let layout = LAYOUT.load();
    let task = unsafe { bpf_get_current_task() };
    let mm = unsafe { read::<u64>(task, layout.task_mm) }.unwrap_or(0);
    open(mm_owner_memcg(&layout, mm));
}

/// Whether an anon rmap for `vma` can be a fork copy: the copy goes into the child's mm, while an
/// ordinary fault adds it to the faulting task's own mm. `load_vma_mm` reads `vma->vm_mm`.
#[inline(always)]
fn for_foreign_mm(vma_mm: u64) -> bool {
    vma_mm != current_task_mm()
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

/// The anon-rmap call of each eager copy (`folio_add_new_anon_rmap` / `page_add_new_anon_rmap`,
/// both `(folio or page, vma, address, ...)`).
#[fentry]
pub fn fork_copy_fentry(ctx: FEntryContext) -> i32 {
    let vma: *const u8 = ctx.arg(1);
    let vma_mm = layout_field!(vma_mm);
    if for_foreign_mm(unsafe { load(vma, vma_mm) }) {
        mark_copy(&ctx);
    }
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
pub fn fork_copy_kprobe(ctx: ProbeContext) -> u32 {
    let Some(vma) = ctx.arg::<u64>(1) else { return 0 };
    let vma_mm = layout_field!(vma_mm);
    if let Ok(vma_mm) = unsafe { read::<u64>(vma, vma_mm) }
        && for_foreign_mm(vma_mm)
    {
        mark_copy(&ctx);
    }
    0
}

#[kprobe]
pub fn fork_split_kprobe(_ctx: ProbeContext) -> u32 {
    mark_split();
    0
}

/// Tracepoint mode, `kmem:mm_page_alloc(page, order, gfp, migratetype)`: one order-0
/// `GFP_HIGHUSER_MOVABLE` allocation per eager copy (the prealloc of `copy_present_page`), made
/// by the parent in its clone system call. The window record is opened at the first copy, so a
/// fork that copies nothing costs no map operation.
#[btf_tracepoint]
pub fn fork_page_alloc(ctx: BtfTracePointContext) -> i32 {
    let order: u32 = ctx.arg(1);
    let gfp: u32 = ctx.arg(2);
    let mask: u64 = layout_field!(gfp_highuser_movable);
    if order != 0 || mask == 0 || (gfp as u64) & mask != mask {
        return 0;
    }
    let task = unsafe { bpf_get_current_task_btf() };
    let regs = unsafe { bpf_task_pt_regs(task) } as *const u8;
    if regs.is_null() || !in_clone_as_parent(regs) {
        return 0;
    }
    if let Some(w) = FORK_WINDOWS.get_ptr_mut(tid()) {
        unsafe { (*w).copies += 1 };
        if stacks::armed() {
            let key = unsafe { (*w).key };
            stacks::capture(&ctx, StackKind::ForkCopy, 0, key.cgroup_id, key.flags);
        }
        return 0;
    }
    let (cgroup_id, flags) = current_owner_memcg_btf(task as *const u8);
    let window = ForkWindow { key: CgroupKey { cgroup_id, flags, _pad: 0 }, copies: 1, thp_splits: 0 };
    let _ = FORK_WINDOWS.insert(tid(), window, 0);
    if stacks::armed() {
        stacks::capture(&ctx, StackKind::ForkCopy, 0, cgroup_id, flags);
    }
    0
}

/// `-ENOSYS`, what x86-64 entry stores in `pt_regs->ax` while a system call runs.
const ENOSYS: i64 = -38;

/// Whether the registers are those of a clone-family system call still running in the parent. The
/// child starts with a copy of them whose `ax` (its return value) is 0; a fault or interrupt has no
/// system-call number with the `Fork` cause.
#[inline(always)]
fn in_clone_as_parent(regs: *const u8) -> bool {
    let (orig_ax, ax) = (layout_field!(pt_regs_orig_ax), layout_field!(pt_regs_ax));
    let nr: i64 = unsafe { load(regs, orig_ax) };
    if nr < 0 || !matches!(SYSCALL_CAUSES.get(nr as u32), Some(&c) if c == Cause::Fork as u32) {
        return false;
    }
    unsafe { load::<i64>(regs, ax) == ENOSYS }
}

/// Tracepoint mode, `task:task_newtask(task, clone_flags)`: the end of `copy_process` in the parent,
/// after the address space was copied. Folds the window the copies opened, if any.
#[btf_tracepoint]
pub fn fork_newtask_close(ctx: BtfTracePointContext) -> i32 {
    close();
    note_unobserved_fork(&ctx);
    0
}

/// fentry mode's `task_newtask`: the window is closed at `dup_mmap`'s return; here only unobserved forks are noted.
#[btf_tracepoint]
pub fn fork_newtask_fentry(ctx: BtfTracePointContext) -> i32 {
    note_unobserved_fork(&ctx);
    0
}

/// kprobe mode's copy of [`fork_newtask_fentry`].
#[btf_tracepoint]
pub fn fork_newtask_kprobe(ctx: BtfTracePointContext) -> i32 {
    note_unobserved_fork(&ctx);
    0
}
