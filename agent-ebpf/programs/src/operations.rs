//! Overlapping brackets within one operation: a thread that opens a bracket on an mm whose
//! range overlaps a bracket it already opened on that mm in the same system call or page
//! fault makes every start/end subscriber invalidate the overlap twice (e.g. munmap of half a
//! PMD-mapped THP: the split brackets [A, A+2M), then the unmap brackets [A+1M, A+2M)).
//!
//! An operation ends when the thread enters a system call or takes a user page fault (the
//! `sys_enter` and `page_fault_user` tracepoints drop its record); in case a boundary is missed
//! (a tracepoint program skipped, a kernel without `page_fault_user`), brackets also have to share
//! the user registers of the entry (system call number, ip, sp, arguments) to be one operation. Kernel threads have no
//! such boundary the programs can see, so their brackets are not compared. The bracket
//! programs call [`bracket_opened`] only once the agent has attached the boundary hooks
//! (`OPERATIONS_ON`), so no record can outlive its operation.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use mmuscope_abi::{DoubleKind, Intervals, KernelLayout, Operation};

use crate::{
    cause,
    cgroup::read,
    maps::{OPERATIONS, OPERATIONS_ON},
    secondary::add_double,
    threads::{self, overlap_and_record},
};

/// A bracket `[start, end)` on `mm` opened by the current thread, whose entry registers are at
/// `regs` ([`cause::user_regs`]).
#[inline(always)]
pub fn bracket_opened(layout: &KernelLayout, mm: u64, start: u64, end: u64, cgroup_id: u64, flags: u32, regs: u64) {
    if OPERATIONS_ON.get(0).is_none_or(|on| *on == 0) {
        return;
    }
    let task = unsafe { aya_ebpf::helpers::bpf_get_current_task() };
    if unsafe { read::<u64>(task, layout.task_mm) }.is_ok_and(|m| m == 0) {
        return; // kernel thread: no operation boundary
    }
    let tid = threads::tid();
    let regs_key = cause::user_regs_key(layout, regs);
    if let Some(op) = OPERATIONS.get_ptr_mut(tid)
        && unsafe { (*op).mm } == mm
        && unsafe { (*op).regs_key } == regs_key
    {
        let (bytes, _) = overlap_and_record(unsafe { &mut (*op).seen }, start, end, false);
        if bytes > 0 {
            add_double(cgroup_id, flags, DoubleKind::OverlappingBrackets, bytes);
        }
        return;
    }
    let mut seen = Intervals::default();
    overlap_and_record(&mut seen, start, end, false);
    let _ = OPERATIONS.insert(tid, Operation { mm, regs_key, seen }, 0);
}

#[inline(always)]
fn boundary() {
    let _ = OPERATIONS.remove(threads::tid());
}

/// Two copies per hook, one per bracket mode, so that each mode's alternative owns its programs.
#[btf_tracepoint]
pub fn operation_sys_enter_fentry(_ctx: BtfTracePointContext) -> i32 {
    boundary();
    0
}

#[btf_tracepoint]
pub fn operation_fault_fentry(_ctx: BtfTracePointContext) -> i32 {
    boundary();
    0
}

#[btf_tracepoint]
pub fn operation_sys_enter_kprobe(_ctx: BtfTracePointContext) -> i32 {
    boundary();
    0
}

#[btf_tracepoint]
pub fn operation_fault_kprobe(_ctx: BtfTracePointContext) -> i32 {
    boundary();
    0
}
