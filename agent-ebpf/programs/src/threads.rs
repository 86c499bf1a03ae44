//! Per-thread state shared by the bracket and secondary-TLB programs: the stack of open
//! brackets (they nest, e.g. a THP split inside a zap) and the open TLB-gather window.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::PerCpuArray};
use mmuscope_abi::{Frame, ThreadState};

use crate::maps::{THREADS, subscriptions_generation};

/// A zeroed [`ThreadState`], the source for inserts (too large for the BPF stack). Never written.
#[map]
static ZERO_THREAD: PerCpuArray<ThreadState> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// This thread's state, created zeroed on first use.
#[inline(always)]
pub fn current() -> Option<*mut ThreadState> {
    let t = tid();
    if let Some(p) = THREADS.get_ptr_mut(t) {
        return Some(p);
    }
    let zero = ZERO_THREAD.get(0)?;
    THREADS.insert(t, zero, 0).ok()?;
    THREADS.get_ptr_mut(t)
}

/// Drops this thread's state once nothing is open, so idle threads cost no map entry.
#[inline(always)]
pub fn release_if_idle(ts: *mut ThreadState) {
    if unsafe { (*ts).depth == 0 } && (unsafe { (*ts).gather_mm == 0 } || gather_stale(ts)) {
        let _ = THREADS.remove(tid());
    }
}

/// Whether the thread's TLB-gather window was opened under an earlier attach of the gather hooks (its close was
/// missed while they were detached): it is not open.
#[inline(always)]
fn gather_stale(ts: *mut ThreadState) -> bool {
    (unsafe { (*ts).gather_generation }) != subscriptions_generation()
}

/// Whether the thread has a TLB-gather window open on `mm` (opened under the current attach of the gather hooks).
#[inline(always)]
pub fn gather_open_on(ts: *mut ThreadState, mm: u64) -> bool {
    (unsafe { (*ts).gather_mm }) == mm && !gather_stale(ts)
}

/// The innermost open bracket, if any.
#[inline(always)]
pub fn top(ts: *mut ThreadState) -> Option<*mut Frame> {
    let depth = unsafe { (*ts).depth } as usize;
    if depth == 0 || depth > ThreadState::MAX_DEPTH {
        return None;
    }
    unsafe { (*ts).frames.get_mut(depth - 1).map(|f| f as *mut Frame) }
}

/// Pushes a bracket; deeper nesting than `MAX_DEPTH` is not tracked (returns false).
#[inline(always)]
pub fn push(ts: *mut ThreadState, frame: &Frame) -> bool {
    let depth = unsafe { (*ts).depth } as usize;
    match unsafe { (*ts).frames.get_mut(depth) } {
        Some(slot) => {
            *slot = *frame;
            unsafe { (*ts).depth += 1 };
            true
        }
        None => false,
    }
}

/// Pops the innermost bracket if it is `range`.
#[inline(always)]
pub fn pop(ts: *mut ThreadState, range: u64) {
    if let Some(f) = top(ts)
        && unsafe { (*f).range } == range
    {
        unsafe { (*ts).depth -= 1 };
    }
}
