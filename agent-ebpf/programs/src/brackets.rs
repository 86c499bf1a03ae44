//! Invalidation brackets: `__mmu_notifier_invalidate_range_start(range)` to the return of
//! `__mmu_notifier_invalidate_range_end(range[, only_end])`, counted and timed per
//! (owner memory cgroup, event, blockable).
//!
//! Two hook sets share the logic: fentry/fexit (preferred) and kprobe/kretprobe. kretprobes
//! see no arguments, so the kprobe half stashes the range pointer per thread.

use aya_ebpf::{
    EbpfContext, Global,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns,
        generated::{bpf_get_current_comm as bpf_get_current_comm_raw, bpf_get_stack},
    },
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{PerCpuHashMap, RingBuf},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, tracing::StackIdContext},
};
use mmuscope_abi::{
    BracketKey, BracketStats, Counter, CrossKey, Frame, InflightBracket, Initiator, KernelLayout, SlowBracket,
    StackKey, StackKind, key_flags,
};

use crate::{
    cause,
    cgroup::{is_kthread, mm_owner_memcg, read, task_memcg},
    interval,
    maps::{INFLIGHT, KPROBE_STASH, LAYOUT, THREADS, bump, per_cpu_entry},
    operations, regs, stacks, subscriber_mask, threads,
};

/// Brackets at least this long (ns) are sent to `SLOW_EVENTS`; `u64::MAX` turns that off.
#[unsafe(no_mangle)]
static SLOW_MIN_NS: Global<u64> = Global::new(u64::MAX);

/// Slow-bracket records for `/api/v1/slow`; a full ring drops records (counted).
#[map]
static SLOW_EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Completed brackets per (owner cgroup, event, flags). Size set by the agent.
#[map]
static BRACKET_STATS: PerCpuHashMap<BracketKey, BracketStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// Brackets whose initiator is not a task of the owning cgroup, per (owner cgroup, initiator).
#[map]
static CROSS_STATS: PerCpuHashMap<CrossKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// Records a bracket opening at `range` (and its stack while a stack request runs).
#[inline(always)]
fn open<C: EbpfContext + StackIdContext>(ctx: &C, range: u64) {
    let layout = LAYOUT.load();
    let Ok(mm) = (unsafe { read::<u64>(range, layout.range_mm) }) else { return };
    let (Ok(start), Ok(end)) =
        (unsafe { read::<u64>(range, layout.range_start) }, unsafe { read::<u64>(range, layout.range_end) })
    else {
        return;
    };
    let subscribers = subscriber_mask::reached(&layout, mm, start, end);
    if subscribers == 0 {
        return; // no one to invalidate: the close finds no in-flight entry and stays silent
    }
    let Ok(event) = (unsafe { read::<u32>(range, layout.range_event) }) else { return };
    let Ok(rflags) = (unsafe { read::<u32>(range, layout.range_flags) }) else { return };
    let (cgroup_id, mut flags) = mm_owner_memcg(&layout, mm);
    if rflags & 1 != 0 {
        flags |= key_flags::BLOCKABLE;
    }
    count_cross_cgroup(&layout, mm, cgroup_id, flags);
    let regs = regs::user_regs(&layout);
    if let Some(ts) = threads::current() {
        let frame = Frame { range, mm, start, end, cgroup_id, flags, subscribers, ..Frame::default() };
        threads::push(ts, &frame);
        operations::bracket_opened(ctx, &layout, mm, start, end, cgroup_id, flags, subscribers, regs);
    }
    let cause = cause::current(&layout, mm, cgroup_id, regs);
    let key = BracketKey { cgroup_id, event, flags, cause, subscribers };
    if stacks::armed() {
        let detail = StackKey::invalidation_detail(event, key.cause);
        stacks::capture(ctx, StackKind::Invalidation, detail, cgroup_id, flags);
    }
    let inflight = InflightBracket { t_start_ns: unsafe { bpf_ktime_get_ns() }, key };
    if INFLIGHT.insert(range, inflight, 0).is_err() {
        bump(Counter::InflightFull);
    }
}

/// Counts the bracket if its initiator is a kernel thread or a task of another memory cgroup
/// (reclaim, compaction, khugepaged, process_madvise …). A task running on `mm` itself belongs to
/// the owning process, so the common case costs one read.
#[inline(always)]
fn count_cross_cgroup(layout: &KernelLayout, mm: u64, owner_cgroup: u64, flags: u32) {
    let current = unsafe { bpf_get_current_task() };
    let Ok(current_mm) = (unsafe { read::<u64>(current, layout.task_mm) }) else { return };
    if current_mm == mm {
        return;
    }
    let initiator = if current_mm == 0 {
        if !is_kthread(layout, current, mm, owner_cgroup) {
            return; // the owner itself, exiting
        }
        Initiator::Kthread
    } else if task_memcg(layout, current).0 != owner_cgroup {
        Initiator::OtherCgroup
    } else {
        return;
    };
    let key = CrossKey { cgroup_id: owner_cgroup, flags, initiator: initiator as u32 };
    if let Some(n) = per_cpu_entry(&CROSS_STATS, &key, &0) {
        unsafe { *n += 1 };
    }
}

/// `invalidate_range_start` returned `ret`: non-zero means no `_end` will follow.
#[inline(always)]
fn start_returned(range: u64, ret: i32) {
    if ret != 0 {
        let _ = INFLIGHT.remove(range);
        bump(Counter::StartFailed);
        pop_frame(range);
    } else if unsafe { INFLIGHT.get(range) }.is_some() {
        // Only brackets that reached a subscriber are in flight.
        let layout = LAYOUT.load();
        if let (Ok(mm), Ok(start), Ok(end)) = (
            unsafe { read::<u64>(range, layout.range_mm) },
            unsafe { read::<u64>(range, layout.range_start) },
            unsafe { read::<u64>(range, layout.range_end) },
        ) {
            interval::bracket_started(&layout, mm, start, end);
        }
    }
}

#[inline(always)]
fn pop_frame(range: u64) {
    if let Some(ts) = THREADS.get_ptr_mut(threads::tid()) {
        threads::pop(ts, range);
        threads::release_if_idle(ts);
    }
}

/// Closes the bracket at `range` when `_end` returns.
#[inline(always)]
fn close<C: EbpfContext>(ctx: &C, range: u64) {
    let now = unsafe { bpf_ktime_get_ns() };
    pop_frame(range);
    let Some(inflight) = (unsafe { INFLIGHT.get(range) }).copied() else {
        // Brackets skipped at start because the mm had no subscriber end here too: only a
        // bracket on an mm that has one is an unmatched end.
        let layout = LAYOUT.load();
        if let (Ok(mm), Ok(start), Ok(end)) = (
            unsafe { read::<u64>(range, layout.range_mm) },
            unsafe { read::<u64>(range, layout.range_start) },
            unsafe { read::<u64>(range, layout.range_end) },
        ) && subscriber_mask::any(&layout, mm, start, end)
        {
            bump(Counter::EndWithoutStart);
        }
        return;
    };
    let _ = INFLIGHT.remove(range);
    let dt = now.saturating_sub(inflight.t_start_ns);
    if dt >= SLOW_MIN_NS.load() {
        report_slow(ctx, range, now, dt, &inflight.key);
    }
    let zero = BracketStats::default();
    let Some(stats) = per_cpu_entry(&BRACKET_STATS, &inflight.key, &zero) else { return };
    // SAFETY: per-CPU value owned by this CPU while the program runs.
    unsafe { (*stats).record(dt) };
}

/// Sends one slow bracket to user space (`/api/v1/slow`). The record is written in place in the ring
/// buffer: built on the stack it would not fit next to `close`'s zeroed histogram (512-byte limit).
#[inline(always)]
fn report_slow<C: EbpfContext>(ctx: &C, range: u64, now: u64, dt: u64, key: &BracketKey) {
    let Some(mut entry) = SLOW_EVENTS.reserve::<SlowBracket>(0) else {
        bump(Counter::SlowDropped);
        return;
    };
    let layout = LAYOUT.load();
    let pid_tgid = bpf_get_current_pid_tgid();
    let r = entry.as_mut_ptr();
    // SAFETY: `r` points to a reserved, exclusively owned record; every field is written before submit.
    unsafe {
        (*r).t_end_ns = now;
        (*r).duration_ns = dt;
        (*r).cgroup_id = key.cgroup_id;
        (*r).start = read::<u64>(range, layout.range_start).unwrap_or(0);
        (*r).end = read::<u64>(range, layout.range_end).unwrap_or(0);
        (*r).flags = key.flags;
        (*r).event = key.event;
        (*r).cause = key.cause;
        (*r).tgid = (pid_tgid >> 32) as u32;
        (*r).tid = pid_tgid as u32;
        // Straight into the record: only slow brackets pay for the unwind, and no stack map can fill up.
        let size = core::mem::size_of_val(&(*r).stack) as u32;
        let n = bpf_get_stack(ctx.as_ptr(), (*r).stack.as_mut_ptr().cast(), size, 0);
        (*r).stack_bytes = if n > 0 { n as u32 } else { 0 };
        if bpf_get_current_comm_raw((*r).comm.as_mut_ptr().cast(), 16) != 0 {
            (*r).comm = [0; 16];
        }
    }
    entry.submit(0);
}

#[fentry]
pub fn bracket_start_fentry(ctx: FEntryContext) -> i32 {
    open(&ctx, ctx.arg::<u64>(0));
    0
}

#[fexit]
pub fn bracket_start_fexit(ctx: FExitContext) -> i32 {
    // fexit sees the return value after the arguments: start(range) has one argument.
    start_returned(ctx.arg::<u64>(0), ctx.arg::<u64>(1) as i32);
    0
}

#[fexit]
pub fn bracket_end_fexit(ctx: FExitContext) -> i32 {
    close(&ctx, ctx.arg::<u64>(0));
    0
}

/// Stash slots: which call the stashed range pointer belongs to.
const STASH_START: u64 = 0;
const STASH_END: u64 = 1 << 32;

#[inline(always)]
fn stash_key(which: u64) -> u64 {
    (bpf_get_current_pid_tgid() & 0xffff_ffff) | which
}

#[inline(always)]
fn stash_take(which: u64) -> Option<u64> {
    let key = stash_key(which);
    let range = unsafe { KPROBE_STASH.get(key) }.copied();
    let _ = KPROBE_STASH.remove(key);
    range
}

#[kprobe]
pub fn bracket_start_kprobe(ctx: ProbeContext) -> u32 {
    let Some(range) = ctx.arg::<u64>(0) else { return 0 };
    open(&ctx, range);
    let _ = KPROBE_STASH.insert(stash_key(STASH_START), range, 0);
    0
}

#[kretprobe]
pub fn bracket_start_kretprobe(ctx: RetProbeContext) -> u32 {
    if let Some(range) = stash_take(STASH_START) {
        start_returned(range, ctx.ret::<u64>() as i32);
    }
    0
}

#[kprobe]
pub fn bracket_end_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(range) = ctx.arg::<u64>(0) {
        let _ = KPROBE_STASH.insert(stash_key(STASH_END), range, 0);
    }
    0
}

#[kretprobe]
pub fn bracket_end_kretprobe(ctx: RetProbeContext) -> u32 {
    if let Some(range) = stash_take(STASH_END) {
        close(&ctx, range);
    }
    0
}
