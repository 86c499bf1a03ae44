//! Secondary-TLB invalidations (`__mmu_notifier_arch_invalidate_secondary_tlbs` on 6.6+,
//! `__mmu_notifier_invalidate_range` before) classified by scope and context, and double
//! notifications: the same secondary range invalidated again within one bracket or gather
//! window, or by `_end` after an in-lock call (pre-6.6). Both count only calls that reach a
//! subscriber implementing the secondary-TLB callback (KVM has none from 6.6); the others reach no one.

use aya_ebpf::{
    EbpfContext,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::PerCpuHashMap,
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext, tracing::StackIdContext},
};
use mmuscope_abi::{Context, CountBytes, DoubleKey, DoubleKind, KernelLayout, Overlap, Scope, SecondaryKey, StackKind};

use crate::{
    cgroup::{load, mm_owner_memcg, read},
    layout_field,
    maps::{LAYOUT, THREADS, per_cpu_entry, subscriptions_generation},
    stacks,
    subscriber_mask::{MAX_LISTED, notifier_bit},
    threads::{self, top},
};

/// Secondary-TLB invalidations per (owner cgroup, scope, context). Size set by the agent.
#[map]
static SECONDARY_STATS: PerCpuHashMap<SecondaryKey, CountBytes> = PerCpuHashMap::with_max_entries(4096, 0);

/// Double notifications per (owner cgroup, kind), with redundant bytes. Size set by the agent.
#[map]
static DOUBLE_STATS: PerCpuHashMap<DoubleKey, CountBytes> = PerCpuHashMap::with_max_entries(4096, 0);

/// The subscribers of `mm` that implement the secondary-TLB callback, as a subscriber mask (0: none).
#[inline(always)]
fn secondary_implementers(l: &KernelLayout, mm: u64) -> u32 {
    let Ok(subs) = (unsafe { read::<u64>(mm, l.mm_notifier_subscriptions) }) else { return 0 };
    if subs == 0 {
        return 0;
    }
    let Ok(mut node) = (unsafe { read::<u64>(subs, l.subscriptions_list) }) else { return 0 };
    let mut mask = 0;
    for _ in 0..MAX_LISTED {
        if node == 0 {
            break;
        }
        let notifier = node - l.notifier_hlist as u64;
        if let Ok(ops) = unsafe { read::<u64>(notifier, l.notifier_ops) }
            && ops != 0
            && unsafe { read::<u64>(ops, l.ops_secondary_tlb) }.is_ok_and(|f| f != 0)
        {
            mask |= notifier_bit(l, ops);
        }
        node = unsafe { read::<u64>(node, l.hlist_next) }.unwrap_or(0);
    }
    mask
}

#[inline(always)]
fn add(map_key: SecondaryKey, bytes: u64) {
    if let Some(v) = per_cpu_entry(&SECONDARY_STATS, &map_key, &CountBytes::default()) {
        unsafe {
            (*v).count += 1;
            (*v).bytes += bytes;
        }
    }
}

/// Counts a double notification of `kind` (or one avoided) and, while a stack request runs, its stack.
#[inline(always)]
pub fn add_double<C: EbpfContext + StackIdContext>(
    ctx: &C,
    cgroup_id: u64,
    flags: u32,
    subscribers: u32,
    kind: DoubleKind,
    bytes: u64,
) {
    if kind != DoubleKind::Avoided && stacks::armed() {
        stacks::capture(ctx, StackKind::DoubleNotification, kind as u32, cgroup_id, flags);
    }
    let key = DoubleKey { cgroup_id, flags, kind: kind as u32, subscribers, _pad: 0 };
    if let Some(v) = per_cpu_entry(&DOUBLE_STATS, &key, &CountBytes::default()) {
        unsafe {
            (*v).count += 1;
            (*v).bytes += bytes;
        }
    }
}

/// One secondary-TLB invalidation of `[start, end)` on `mm`, counted only if it reaches an implementer of the
/// callback: the kernel calls the entry point for every mm with subscriptions, and from 6.6 KVM implements none, so on
/// a KVM-only host no call reaches anybody. Interval notifiers have no such callback, so the list walk decides.
#[inline(always)]
fn secondary_call<C: EbpfContext + StackIdContext>(ctx: &C, mm: u64, start: u64, end: u64) {
    let l = LAYOUT.load();
    let implementers = secondary_implementers(&l, mm);
    if implementers == 0 {
        return;
    }
    let scope = if start == 0 && end == u64::MAX { Scope::FullMm } else { Scope::Range };
    let bytes = if scope == Scope::FullMm { 0 } else { end.saturating_sub(start) };
    let ts = THREADS.get_ptr_mut(threads::tid());
    let mut context = Context::Outside;
    let mut overlap = Overlap::default();
    let (mut cgroup_id, mut flags) = (0u64, 0u32);
    if let Some(ts) = ts {
        if let Some(f) = top(ts)
            && unsafe { (*f).mm } == mm
        {
            context = Context::Bracket;
            unsafe {
                (*f).sec_calls += 1;
                (*f).sec_bytes += bytes;
                cgroup_id = (*f).cgroup_id;
                flags = (*f).flags;
                overlap = (*f).seen.overlap_and_record(start, end, false);
            }
        } else if threads::gather_open_on(ts, mm) {
            context = Context::Gather;
            overlap = unsafe { (*ts).gather_seen.overlap_and_record(start, end, false) };
        }
    }
    if context != Context::Bracket {
        (cgroup_id, flags) = mm_owner_memcg(&l, mm);
    }
    add(SecondaryKey { cgroup_id, flags, scope: scope as u8, context: context as u8, _pad: 0 }, bytes);
    if overlap.any {
        let kind = if overlap.by_end { DoubleKind::EndThenGather } else { DoubleKind::OverlappingSecondaryTlb };
        add_double(ctx, cgroup_id, flags, implementers, kind, overlap.bytes);
    }
}

/// Pre-6.6 `__mmu_notifier_invalidate_range_end(range, only_end)` entry: unless `only_end`,
/// the end calls `->invalidate_range(start, end)` itself for implementers.
#[inline(always)]
fn end_entry<C: EbpfContext + StackIdContext>(ctx: &C, range: u64, only_end: bool) {
    let Some(ts) = THREADS.get_ptr_mut(threads::tid()) else { return };
    let Some(f) = top(ts) else { return };
    if unsafe { (*f).range } != range {
        return;
    }
    let (mm, start, end, cgroup_id, flags) = unsafe { ((*f).mm, (*f).start, (*f).end, (*f).cgroup_id, (*f).flags) };
    if only_end {
        add_double(ctx, cgroup_id, flags, unsafe { (*f).subscribers }, DoubleKind::Avoided, 0);
        return;
    }
    let l = LAYOUT.load();
    let implementers = secondary_implementers(&l, mm);
    if implementers == 0 {
        return;
    }
    add(
        SecondaryKey { cgroup_id, flags, scope: Scope::Range as u8, context: Context::Bracket as u8, _pad: 0 },
        end.saturating_sub(start),
    );
    let in_lock = unsafe { (*f).seen.overlap_and_record(start, end, true) };
    if in_lock.any {
        add_double(ctx, cgroup_id, flags, implementers, DoubleKind::EndAfterInLock, in_lock.bytes);
    }
    // A gather flush of this mm after the end would repeat the range.
    if threads::gather_open_on(ts, mm) {
        let _ = unsafe { (*ts).gather_seen.overlap_and_record(start, end, true) };
    }
}

#[inline(always)]
fn gather_open(mm: u64) {
    if let Some(ts) = threads::current() {
        unsafe {
            (*ts).gather_mm = mm;
            (*ts).gather_generation = subscriptions_generation();
            (*ts).gather_seen.len = 0;
        }
    }
}

#[inline(always)]
fn gather_close() {
    if let Some(ts) = THREADS.get_ptr_mut(threads::tid()) {
        unsafe { (*ts).gather_mm = 0 };
        threads::release_if_idle(ts);
    }
}

#[fentry]
pub fn secondary_fentry(ctx: FEntryContext) -> i32 {
    secondary_call(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[fentry]
pub fn secondary_end_fentry(ctx: FEntryContext) -> i32 {
    end_entry(&ctx, ctx.arg(0), ctx.arg::<u64>(1) & 0xff != 0);
    0
}

/// `tlb_gather_mmu(tlb, mm)` and `tlb_finish_mmu(tlb)` run for every unmap on the host; only a gather
/// of an mm with notifier subscriptions can carry a secondary-TLB call, so the others leave after two loads.
#[fentry]
pub fn gather_open_fentry(ctx: FEntryContext) -> i32 {
    let mm: *const u8 = ctx.arg(1);
    let subs = layout_field!(mm_notifier_subscriptions);
    if unsafe { load::<u64>(mm, subs) } != 0 {
        gather_open(mm as u64);
    }
    0
}

#[fexit]
pub fn gather_close_fexit(ctx: FExitContext) -> i32 {
    let tlb: *const u8 = ctx.arg(0);
    let (gather_mm, subs) = (layout_field!(gather_mm), layout_field!(mm_notifier_subscriptions));
    let mm: *const u8 = unsafe { load(tlb, gather_mm) };
    if !mm.is_null() && unsafe { load::<u64>(mm, subs) } != 0 {
        gather_close();
    }
    0
}

#[kprobe]
pub fn secondary_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(mm), Some(s), Some(e)) = (ctx.arg(0), ctx.arg(1), ctx.arg(2)) {
        secondary_call(&ctx, mm, s, e);
    }
    0
}

#[kprobe]
pub fn secondary_end_kprobe(ctx: ProbeContext) -> u32 {
    if let (Some(range), Some(only_end)) = (ctx.arg(0), ctx.arg::<u64>(1)) {
        end_entry(&ctx, range, only_end & 0xff != 0);
    }
    0
}

#[kprobe]
pub fn gather_open_kprobe(ctx: ProbeContext) -> u32 {
    let subs = layout_field!(mm_notifier_subscriptions);
    if let Some(mm) = ctx.arg::<u64>(1)
        && unsafe { read::<u64>(mm, subs) }.is_ok_and(|s| s != 0)
    {
        gather_open(mm);
    }
    0
}

/// A kretprobe has no arguments left: the per-thread record says whether this gather was opened.
#[kretprobe]
pub fn gather_close_kretprobe(_ctx: RetProbeContext) -> u32 {
    gather_close();
    0
}
