//! Overlapping brackets within one operation: a thread that opens a bracket on an mm whose
//! range overlaps a bracket it already opened on that mm in the same system call or page
//! fault makes every start/end subscriber invalidate the overlap twice (e.g. munmap of half a
//! PMD-mapped THP: the split brackets [A, A+2M), then the unmap brackets [A+1M, A+2M)).
//!
//! An operation ends when the thread enters one of the system calls the agent hooks for this
//! (`agent/src/probes/families/overlapping_brackets.rs`: those that repeat the same invalidation with the same registers, like a
//! `madvise` loop) or a soft-dirty or userfaultfd write-protect window (the cause hooks); any other
//! entry is told apart by the user registers it brought (system-call number or fault error code,
//! ip, sp, arguments), which brackets must share to be one operation. Kernel threads have no such
//! boundary the programs can see, so their brackets are not compared. The bracket programs call
//! [`bracket_opened`] only once the agent has attached the boundary hooks (`OPERATIONS_ON`), so
//! no record can outlive its operation.

use aya_ebpf::{
    EbpfContext,
    helpers::bpf_get_current_task,
    macros::{fentry, kprobe, map},
    maps::{Array, LruHashMap},
    programs::{FEntryContext, ProbeContext, tracing::StackIdContext},
};
use mmuscope_abi::{DoubleKind, Intervals, KernelLayout, Operation};

use crate::{
    cgroup::{current_task_mm, load, read},
    layout_field,
    maps::subscriptions_generation,
    regs,
    secondary::add_double,
    threads,
};

/// The brackets each thread opened in its current operation (see `operations`). LRU: a
/// thread that exits mid-operation must not keep its entry.
#[map]
static OPERATIONS: LruHashMap<u32, Operation> = LruHashMap::with_max_entries(16384, 0);

/// Slot 0 is 1 once the agent attached the operation boundary hooks.
#[map]
static OPERATIONS_ON: Array<u32> = Array::with_max_entries(1, 0);

/// A bracket `[start, end)` on `mm` opened by the current thread, whose entry registers are at
/// `regs` ([`regs::user_regs`]).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn bracket_opened<C: EbpfContext + StackIdContext>(
    ctx: &C,
    layout: &KernelLayout,
    mm: u64,
    start: u64,
    end: u64,
    cgroup_id: u64,
    flags: u32,
    subscribers: u32,
    regs: u64,
) {
    if OPERATIONS_ON.get(0).is_none_or(|on| *on == 0) {
        return;
    }
    // The boundary hooks are attached only while some mm has subscriptions (the agent's `probes::arming`): while
    // they are detached no record may be made (nothing would end its operation), and a record of an earlier attach
    // is stale (its boundary may have passed while detached).
    let generation = subscriptions_generation();
    if generation == 0 {
        return;
    }
    let generation = u64::from(generation);
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    if unsafe { read::<u64>(task, layout.task_mm) }.is_ok_and(|m| m == 0) {
        return; // kernel thread: no operation boundary
    }
    let tid = threads::tid();
    let regs_key = regs::user_regs_key(layout, regs);
    if let Some(op) = OPERATIONS.get_ptr_mut(tid)
        && unsafe { (*op).mm } == mm
        && unsafe { (*op).regs_key } == regs_key
        && unsafe { (*op).generation } == generation
    {
        let o = unsafe { (*op).seen.overlap_and_record(start, end, false) };
        if o.any {
            add_double(ctx, cgroup_id, flags, subscribers, DoubleKind::OverlappingBrackets, o.bytes);
        }
        return;
    }
    let mut seen = Intervals::default();
    seen.overlap_and_record(start, end, false);
    let _ = OPERATIONS.insert(tid, Operation { mm, regs_key, generation, seen }, 0);
}

/// Ends the current thread's operation: its next bracket starts a new one.
#[inline(always)]
pub fn end_operation() {
    let _ = OPERATIONS.remove(threads::tid());
}

/// Ends the operation of a task whose mm has notifier subscriptions; any other task cannot have a
/// record and leaves after two loads.
#[inline(always)]
fn syscall_entry_btf() {
    let subs = layout_field!(mm_notifier_subscriptions);
    let mm = current_task_mm();
    if mm == 0 {
        return;
    }
    // `mm` came from a BTF load only where the kernel has the BTF task helper (see `current_task_mm`).
    let subscribed = if layout_field!(task_btf) != 0 {
        (unsafe { load::<u64>(mm as *const u8, subs) }) != 0
    } else {
        unsafe { read::<u64>(mm, subs) }.is_ok_and(|s| s != 0)
    };
    if subscribed {
        end_operation();
    }
}

/// One fentry program per hooked system call (a trampoline program is loaded for one function); the
/// agent's `probes/overlaps.rs` pairs each with its entry point.
macro_rules! syscall_boundaries {
    ($($name:ident),* $(,)?) => { $(
        #[fentry]
        pub fn $name(_ctx: FEntryContext) -> i32 {
            syscall_entry_btf();
            0
        }
    )* };
}

syscall_boundaries!(
    operation_madvise_fentry,
    operation_process_madvise_fentry,
    operation_munmap_fentry,
    operation_mmap_fentry,
    operation_brk_fentry,
    operation_mremap_fentry,
    operation_mprotect_fentry,
    operation_pkey_mprotect_fentry,
    operation_clone_fentry,
    operation_clone3_fentry,
    operation_fork_fentry,
    operation_migrate_pages_fentry,
    operation_move_pages_fentry,
    operation_mbind_fentry,
);

/// The kprobe mode's boundary, attached to every hooked system call.
#[kprobe]
pub fn operation_syscall_kprobe(_ctx: ProbeContext) -> u32 {
    let (task_mm, subs) = (layout_field!(task_mm), layout_field!(mm_notifier_subscriptions));
    let task = unsafe { bpf_get_current_task() };
    if let Ok(mm) = unsafe { read::<u64>(task, task_mm) }
        && mm != 0
        && unsafe { read::<u64>(mm, subs) }.is_ok_and(|s| s != 0)
    {
        end_operation();
    }
    0
}
