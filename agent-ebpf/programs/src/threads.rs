//! Per-thread state shared by the bracket and secondary-TLB programs: the stack of open
//! brackets (they nest, e.g. a THP split inside a zap) and the open TLB-gather window.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::map, maps::PerCpuArray};
use mmuscope_abi::{Frame, Intervals, ThreadState};

use crate::maps::THREADS;

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
    if unsafe { (*ts).depth == 0 && (*ts).gather_mm == 0 } {
        let _ = THREADS.remove(tid());
    }
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

/// Bytes of `[s, e)` already covered by `seen`, and whether the covering range came from an
/// `_end` call; then records `[s, e)`. (Overlaps with several earlier ranges add up, which can
/// only over-count a range invalidated three or more times — still redundant each time.)
/// A range that continues a recorded one of the same origin (`[s, e)` starts where it ends or
/// ends where it starts) extends it instead of taking a slot: reclaim ends one 4 KiB bracket per
/// page in address order inside one gather window, and the gather flush then covers all of them,
/// more than [`Intervals::N`] separate slots could remember.
#[inline(always)]
pub fn overlap_and_record(seen: &mut Intervals, s: u64, e: u64, from_end: bool) -> (u64, bool) {
    let mut bytes = 0u64;
    let mut by_end = false;
    let mut extends = None;
    let n = (seen.len as usize).min(Intervals::N);
    for i in 0..Intervals::N {
        if i >= n {
            break;
        }
        let lo = if seen.start[i] > s { seen.start[i] } else { s };
        let hi = if seen.end[i] < e { seen.end[i] } else { e };
        if hi > lo {
            bytes += hi - lo;
            by_end |= seen.from_end[i] != 0;
        } else if extends.is_none() && seen.from_end[i] == from_end as u8 && (seen.end[i] == s || seen.start[i] == e) {
            extends = Some(i);
        }
    }
    // Only a range that overlaps nothing recorded extends one: an overlapping one keeps its own slot.
    if bytes == 0
        && let Some(i) = extends
        && let (Some(a), Some(b)) = (seen.start.get_mut(i), seen.end.get_mut(i))
    {
        if *b == s {
            *b = e;
        } else {
            *a = s;
        }
        return (0, false);
    }
    // Keep the newest N ranges.
    let slot = (seen.len as usize) % Intervals::N;
    if let (Some(a), Some(b), Some(c)) = (seen.start.get_mut(slot), seen.end.get_mut(slot), seen.from_end.get_mut(slot))
    {
        *a = s;
        *b = e;
        *c = from_end as u8;
    }
    seen.len = seen.len.wrapping_add(1);
    (bytes, by_end)
}
