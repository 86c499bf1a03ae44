//! Cause tags: why the current task is invalidating (see `mmuscope_abi::Cause`).
//!
//! Two sources, the more specific first:
//! 1. caller windows: the cause hooks below run at entry and return of functions that
//!    invalidate for a known reason (`__split_huge_pmd`, `shrink_folio_list`, …) and keep a
//!    small per-thread stack of open windows (fentry/kprobe modes only);
//! 2. the task's context: reclaim (`task->reclaim_state`), a kernel thread (by name), or the
//!    system call in progress (`pt_regs->orig_ax`; -1 outside a system call, i.e. a fault),
//!    mapped to a cause by the `SYSCALL_CAUSES` table the agent fills. This works in every
//!    mode, including the tracepoint fallback.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, generated::bpf_get_current_task_btf},
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, LruHashMap},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use mmuscope_abi::{Cause, KernelLayout, caller_stack};

use crate::{
    cgroup::{is_kthread, load, read},
    layout_field,
    maps::{INFLIGHT, LAYOUT, SYSCALL_CAUSES, THREADS, subscriptions_generation},
    threads,
};

/// Open caller windows of the cause hooks per thread id (see `cause`): the [`caller_stack`] and the subscription
/// hooks' attach generation it was opened under (`SUBSCRIPTIONS_ARMED`; a stack of an earlier one lost its returns
/// while the hooks were detached, and is stale). LRU: a window whose return was missed (kretprobe overflow) must not
/// pin its entry.
#[map]
static CALLER_CAUSES: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(16384, 0);

/// Slot 0 is 1 once the agent attached the causes family's caller windows (`CALLER_CAUSES` is filled).
#[map]
static CAUSES_ON: Array<u32> = Array::with_max_entries(1, 0);

/// The cause of an invalidation of `mm` (0 where unknown) started now by the current task, whose
/// entry registers are at `regs` ([`user_regs`](crate::regs::user_regs)). `owner_cgroup` is the memory cgroup of
/// `mm`'s owner (0: unknown), which tells the owner tearing down its own mm from a kernel thread that borrowed that
/// mm lazily as its `active_mm` (ksmd right after the owner ran on the same CPU).
#[inline(always)]
pub fn current(layout: &KernelLayout, mm: u64, owner_cgroup: u64, regs: u64) -> u32 {
    if let Some(top) = caller_window() {
        return top;
    }
    if layout_field!(cause_context) == 0 || regs == 0 {
        return Cause::Unknown as u32;
    }
    context(layout, mm, owner_cgroup, regs) as u32
}

#[inline(always)]
fn context(layout: &KernelLayout, mm: u64, owner_cgroup: u64, regs: u64) -> Cause {
    let task = unsafe { bpf_get_current_task_btf() } as u64;
    if unsafe { read::<u64>(task, layout.task_reclaim_state) }.is_ok_and(|r| r != 0) {
        return Cause::Reclaim;
    }
    let Ok(own_mm) = (unsafe { read::<u64>(task, layout.task_mm) }) else { return Cause::Unknown };
    if own_mm == 0 {
        return if is_kthread(layout, task, mm, owner_cgroup) { kthread() } else { Cause::Exit };
    }
    let Ok(nr) = (unsafe { read::<i64>(regs, layout.pt_regs_orig_ax) }) else { return Cause::Unknown };
    syscall(nr)
}

/// [`current`] with the task's context read by direct BTF loads ([`load`]): `task` is
/// `bpf_get_current_task_btf()` and `regs` its `bpf_task_pt_regs()` (tracing programs only). Offsets are read
/// one by one ([`layout_field!`]), as on every hot path.
#[inline(always)]
pub fn current_btf(task: *const u8, regs: *const u8) -> u32 {
    if let Some(top) = caller_window() {
        return top;
    }
    if layout_field!(cause_context) == 0 || regs.is_null() {
        return Cause::Unknown as u32;
    }
    let (reclaim_state, task_mm) = (layout_field!(task_reclaim_state), layout_field!(task_mm));
    let cause = if unsafe { load::<u64>(task, reclaim_state) } != 0 {
        Cause::Reclaim
    } else if unsafe { load::<u64>(task, task_mm) } == 0 {
        if is_kthread(&LAYOUT.load(), task as u64, 0, 0) { kthread() } else { Cause::Exit }
    } else {
        let orig_ax = layout_field!(pt_regs_orig_ax);
        syscall(unsafe { load::<i64>(regs, orig_ax) })
    };
    cause as u32
}

/// The cause of the innermost open caller window of the current thread, if the windows are attached and one is open,
/// else `ksm_cow` inside a write fault's copy of a KSM page (that family needs this one attached).
#[inline(always)]
fn caller_window() -> Option<u32> {
    // Without attached windows (tracepoint mode) the per-thread lookup would always miss: skip it.
    if CAUSES_ON.get(0).is_none_or(|on| *on == 0) {
        return None;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let generation = u64::from(subscriptions_generation());
    // Detached (generation 0): no window is open, whatever the map still holds.
    if generation != 0
        && let Some([stack, opened]) = unsafe { CALLER_CAUSES.get(tid) }
        && *opened == generation
    {
        let top = caller_stack::top(*stack);
        if top != 0 {
            return Some(top);
        }
    }
    crate::ksm_cow::copying(tid)
}

/// The cause of a system call number (negative: not in a system call, i.e. a page fault).
#[inline(always)]
fn syscall(nr: i64) -> Cause {
    if nr < 0 {
        return Cause::PageFault;
    }
    match SYSCALL_CAUSES.get(nr as u32) {
        Some(&c) if c != 0 => Cause::from_raw(c),
        _ => Cause::OtherSyscall,
    }
}

/// A kernel thread's cause from its name (kswapd0, kcompactd0, khugepaged, ksmd).
#[inline(always)]
fn kthread() -> Cause {
    let Ok(comm) = bpf_get_current_comm() else { return Cause::Kthread };
    if comm.starts_with(b"kswapd") {
        Cause::Reclaim
    } else if comm.starts_with(b"kcompactd") {
        Cause::Migration
    } else if comm.starts_with(b"khugepaged") {
        Cause::Khugepaged
    } else if comm.starts_with(b"ksmd") {
        Cause::Ksm
    } else {
        Cause::Kthread
    }
}

#[inline(always)]
fn enter(cause: Cause) {
    // Soft-dirty clearing and userfaultfd write-protection repeat over the same range with the same
    // registers (a write to clear_refs, an ioctl); each call is a new operation.
    if matches!(cause, Cause::SoftDirty | Cause::Userfaultfd) {
        crate::operations::end_operation();
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    let generation = u64::from(subscriptions_generation());
    let stack = match unsafe { CALLER_CAUSES.get(tid) } {
        Some([stack, opened]) if *opened == generation => *stack,
        _ => 0, // none, or stale
    };
    let _ = CALLER_CAUSES.insert(tid, [caller_stack::push(stack, cause as u32), generation], 0);
}

#[inline(always)]
fn leave() {
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some([stack, opened]) = (unsafe { CALLER_CAUSES.get(tid) }).copied() else { return };
    let rest = caller_stack::pop(stack);
    if rest == 0 || opened != u64::from(subscriptions_generation()) {
        let _ = CALLER_CAUSES.remove(tid);
    } else {
        let _ = CALLER_CAUSES.insert(tid, [rest, opened], 0);
    }
}

/// Entry and return programs of one caller window, in fentry/fexit and kprobe/kretprobe form.
macro_rules! cause_hook {
    ($cause:expr, $fentry:ident, $fexit:ident, $kprobe:ident, $kretprobe:ident) => {
        #[fentry]
        pub fn $fentry(_ctx: FEntryContext) -> i32 {
            enter($cause);
            0
        }

        #[fexit]
        pub fn $fexit(_ctx: FExitContext) -> i32 {
            leave();
            0
        }

        #[kprobe]
        pub fn $kprobe(_ctx: ProbeContext) -> u32 {
            enter($cause);
            0
        }

        #[kretprobe]
        pub fn $kretprobe(_ctx: RetProbeContext) -> u32 {
            leave();
            0
        }
    };
}

cause_hook!(
    Cause::ThpSplit,
    cause_thp_split_fentry,
    cause_thp_split_fexit,
    cause_thp_split_kprobe,
    cause_thp_split_kretprobe
);
cause_hook!(Cause::Reclaim, cause_reclaim_fentry, cause_reclaim_fexit, cause_reclaim_kprobe, cause_reclaim_kretprobe);
cause_hook!(
    Cause::Migration,
    cause_migration_fentry,
    cause_migration_fexit,
    cause_migration_kprobe,
    cause_migration_kretprobe
);
cause_hook!(Cause::Numa, cause_numa_fentry, cause_numa_fexit, cause_numa_kprobe, cause_numa_kretprobe);
cause_hook!(
    Cause::SoftDirty,
    cause_soft_dirty_fentry,
    cause_soft_dirty_fexit,
    cause_soft_dirty_kprobe,
    cause_soft_dirty_kretprobe
);
cause_hook!(
    Cause::Userfaultfd,
    cause_userfaultfd_fentry,
    cause_userfaultfd_fexit,
    cause_userfaultfd_kprobe,
    cause_userfaultfd_kretprobe
);
cause_hook!(Cause::Exit, cause_exit_fentry, cause_exit_fexit, cause_exit_kprobe, cause_exit_kretprobe);

/// `split_huge_pmd_locked(vma, address, pmd, freeze, …)` ran: a PMD split inside the bracket this thread has open
/// over that mm and address makes it a THP-split bracket, whatever opened it (6.11+: `try_to_unmap_one` splits in its
/// walk, after opening its bracket for reclaim). Inside `__split_huge_pmd`'s own bracket it changes nothing.
#[inline(always)]
fn split_in_bracket(vma: u64, address: u64) {
    let Some(ts) = THREADS.get_ptr_mut(threads::tid()) else { return };
    let Some(frame) = threads::top(ts) else { return };
    let (range, mm, start, end) = unsafe { ((*frame).range, (*frame).mm, (*frame).start, (*frame).end) };
    if address < start || address >= end {
        return;
    }
    let offset = layout_field!(vma_mm);
    let Ok(vma_mm) = (unsafe { read::<u64>(vma, offset) }) else { return };
    if vma_mm != mm {
        return;
    }
    if let Some(b) = INFLIGHT.get_ptr_mut(range) {
        unsafe { (*b).key.cause = Cause::ThpSplit as u32 };
    }
}

#[fentry]
pub fn cause_thp_split_in_bracket_fentry(ctx: FEntryContext) -> i32 {
    split_in_bracket(ctx.arg(0), ctx.arg(1));
    0
}

#[kprobe]
pub fn cause_thp_split_in_bracket_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(vma), Some(address)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) {
        split_in_bracket(vma, address);
    }
    0
}

cause_hook!(
    Cause::ThpSplit,
    cause_thp_split_page_fentry,
    cause_thp_split_page_fexit,
    cause_thp_split_page_kprobe,
    cause_thp_split_page_kretprobe
);
