//! Interval notifiers: reader waits in `mmu_interval_read_begin`, `hmm_range_fault`
//! collisions (-EBUSY), and brackets that reached interval subscribers.
//!
//! `mmu_interval_read_begin` sleeps when the notifier's `invalidate_seq` equals the
//! subscriptions' (an invalidation of it is in flight); the entry program tests exactly that,
//! so a wait is counted only when the reader really blocked, and timed to the return.
//!
//! A read collision: a thread's `mmu_interval_read_begin` on a notifier returns another sequence than the thread's
//! previous `read_begin` on it returned — an invalidation of the interval ran in between, so the previous read
//! section was invalidated before the thread began again. Every retry of the collision-retry loop
//! (`mmu_interval_read_retry` true, or `hmm_range_fault` -EBUSY, then `read_begin` again) is one; so is the next
//! fault of a range after an invalidation of an already committed one. The retry itself is inline in the driver and
//! cannot be told apart from the latter (docs/probes.md).

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuArray, PerCpuHashMap},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use mmuscope_abi::{BracketStats, CgroupKey, IntervalKey, IntervalRead, KernelLayout, ReadSeqKey};

use crate::{
    cgroup::{mm_owner_memcg, read},
    maps::{KPROBE_STASH, LAYOUT, per_cpu_entry},
    threads,
};

/// `mmu_interval_read_begin` calls in progress per thread id.
#[map]
static INTERVAL_READS: LruHashMap<u32, IntervalRead> = LruHashMap::with_max_entries(4096, 0);

/// Interval-reader waits per (owner cgroup, subscriber), as a latency histogram. Size set by the agent.
#[map]
static INTERVAL_WAITS: PerCpuHashMap<IntervalKey, BracketStats> = PerCpuHashMap::with_max_entries(4096, 0);

/// The sequence each thread's last `mmu_interval_read_begin` on each notifier returned.
#[map]
static READ_SEQS: LruHashMap<ReadSeqKey, u64> = LruHashMap::with_max_entries(8192, 0);

/// Read collisions per (owner cgroup, subscriber): see the module docs.
#[map]
static INTERVAL_COLLISIONS: PerCpuHashMap<IntervalKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// A zeroed [`BracketStats`], the source for inserts into [`INTERVAL_WAITS`]: on the stack it would not fit next to
/// the layout and the read-collision count. Never written.
#[map]
static ZERO_WAIT_STATS: PerCpuArray<BracketStats> = PerCpuArray::with_max_entries(1, 0);

/// Brackets that reached interval subscribers (`invalidate_seq` odd after start), per owner cgroup.
#[map]
static INTERVAL_HITS: PerCpuHashMap<CgroupKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// `hmm_range_fault` calls that returned -EBUSY (an invalidation collided), per owner cgroup.
#[map]
static HMM_BUSY: PerCpuHashMap<CgroupKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// `-EBUSY`.
const EBUSY: i64 = -16;
/// Stash slot of `hmm_range_fault`'s range pointer for its kretprobe (see brackets' slots).
const STASH_HMM: u64 = 2 << 32;

#[inline(always)]
fn read_begin(sub: u64) {
    let l = LAYOUT.load();
    let waiting = unsafe { in_flight(&l, sub) }.unwrap_or(false);
    let state = IntervalRead { t_start_ns: unsafe { bpf_ktime_get_ns() }, sub, waiting: waiting as u32, _pad: 0 };
    let _ = INTERVAL_READS.insert(threads::tid(), state, 0);
}

/// Whether an invalidation of `sub` is in flight (`mmu_interval_read_begin`'s own test).
#[inline(always)]
unsafe fn in_flight(l: &KernelLayout, sub: u64) -> Result<bool, ()> {
    let mm: u64 = unsafe { read(sub, l.interval_sub_mm)? };
    let subs: u64 = unsafe { read(mm, l.mm_notifier_subscriptions)? };
    if subs == 0 {
        return Ok(false);
    }
    let seq: u64 = unsafe { read(sub, l.interval_sub_seq)? };
    let current: u64 = unsafe { read(subs, l.subscriptions_invalidate_seq)? };
    Ok(seq == current)
}

/// `mmu_interval_read_begin` returned `seq` on this thread.
#[inline(always)]
fn read_returned(seq: u64) {
    let tid = threads::tid();
    let Some(state) = (unsafe { INTERVAL_READS.get(tid) }).copied() else { return };
    let _ = INTERVAL_READS.remove(tid);
    let seq_key = ReadSeqKey { sub: state.sub, tid, _pad: 0 };
    let collided = unsafe { READ_SEQS.get(seq_key) }.is_some_and(|prev| *prev != seq);
    let _ = READ_SEQS.insert(seq_key, seq, 0);
    if state.waiting == 0 && !collided {
        return;
    }
    let l = LAYOUT.load();
    let Ok(mm) = (unsafe { read::<u64>(state.sub, l.interval_sub_mm) }) else { return };
    let (cgroup_id, flags) = mm_owner_memcg(&l, mm);
    let invalidate_fn = unsafe { read::<u64>(state.sub, l.interval_sub_ops) }
        .and_then(|ops| unsafe { read::<u64>(ops, l.interval_ops_invalidate) })
        .unwrap_or(0);
    let key = IntervalKey { cgroup_id, flags, _pad: 0, invalidate_fn };
    if state.waiting != 0 {
        let dt = unsafe { bpf_ktime_get_ns() }.saturating_sub(state.t_start_ns);
        if let Some(zero) = ZERO_WAIT_STATS.get(0)
            && let Some(s) = per_cpu_entry(&INTERVAL_WAITS, &key, zero)
        {
            unsafe { (*s).record(dt) };
        }
    }
    if collided && let Some(n) = per_cpu_entry(&INTERVAL_COLLISIONS, &key, &0) {
        unsafe { *n += 1 };
    }
}

/// `hmm_range_fault(range)` returned `ret`.
#[inline(always)]
fn hmm_returned(range: u64, ret: i64) {
    if ret != EBUSY {
        return;
    }
    let l = LAYOUT.load();
    let Ok(sub) = (unsafe { read::<u64>(range, l.hmm_range_notifier) }) else { return };
    let Ok(mm) = (unsafe { read::<u64>(sub, l.interval_sub_mm) }) else { return };
    count(&HMM_BUSY, &l, mm);
}

/// Called by the bracket programs when `invalidate_range_start` of `[start, end)` on `mm` returned: it
/// reached an interval notifier when an interval of the mm's tree intersects the range, the test
/// `mn_itree_inv_start_range` made (the tree cannot change meanwhile: while an invalidation that hit it
/// runs, `invalidate_seq` is odd and insertions and removals are deferred). An odd `invalidate_seq`
/// alone is not enough: it stays odd until every concurrent bracket of the mm has ended, so a bracket
/// that hit no interval sees it odd too.
#[inline(always)]
pub fn bracket_started(l: &KernelLayout, mm: u64, start: u64, end: u64) {
    if l.interval_fields == 0 {
        return;
    }
    let Ok(subs) = (unsafe { read::<u64>(mm, l.mm_notifier_subscriptions) }) else { return };
    if subs == 0 || !unsafe { read::<u64>(subs, l.subscriptions_invalidate_seq) }.is_ok_and(|seq| seq & 1 == 1) {
        return;
    }
    let Ok(root) = (unsafe { read::<u64>(subs, l.subscriptions_itree_root) }) else { return };
    if itree_intersects(l, root, start, end) {
        count(&INTERVAL_HITS, l, mm);
    }
}

/// Deepest interval tree walked: a red-black tree of depth 64 holds billions of nodes.
const MAX_TREE_DEPTH: u32 = 64;

/// What the interval-tree search of [`itree_first`] found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    Miss,
    /// The `rb_node` of the first interval intersecting the range.
    Node(u64),
    /// A node could not be read, the tree is deeper than [`MAX_TREE_DEPTH`], or the fields did not resolve: counted
    /// as a hit (the old, coarser answer) of an unknown subscriber.
    Unknown,
}

/// Whether an interval of the tree at `root` (an `rb_node`, NULL for an empty tree) intersects `[start, end)`.
#[inline(always)]
pub fn itree_intersects(l: &KernelLayout, root: u64, start: u64, end: u64) -> bool {
    itree_first(l, root, start, end) != Hit::Miss
}

/// The first interval of the tree at `root` intersecting `[start, end)`: the search of the kernel's
/// `interval_tree_iter_first(root, start, end - 1)` (include/linux/interval_tree_generic.h,
/// `interval_tree_subtree_search`).
#[inline(always)]
pub fn itree_first(l: &KernelLayout, root: u64, start: u64, end: u64) -> Hit {
    if root == 0 || end <= start {
        return Hit::Miss;
    }
    if l.interval_fields == 0 {
        return Hit::Unknown;
    }
    let last = end - 1;
    let subtree_last = |node: u64| unsafe { read::<u64>(node, l.itree_subtree_last) };
    let mut node = root;
    match subtree_last(node) {
        Ok(v) if v < start => return Hit::Miss,
        Ok(_) => {}
        Err(()) => return Hit::Unknown,
    }
    for _ in 0..MAX_TREE_DEPTH {
        let Ok(left) = (unsafe { read::<u64>(node, l.itree_rb_left) }) else { return Hit::Unknown };
        if left != 0 {
            let Ok(v) = subtree_last(left) else { return Hit::Unknown };
            if start <= v {
                node = left;
                continue;
            }
        }
        let (Ok(node_start), Ok(node_last)) =
            (unsafe { read::<u64>(node, l.itree_start) }, unsafe { read::<u64>(node, l.itree_last) })
        else {
            return Hit::Unknown;
        };
        if node_start > last {
            return Hit::Miss;
        }
        if start <= node_last {
            return Hit::Node(node);
        }
        let Ok(right) = (unsafe { read::<u64>(node, l.itree_rb_right) }) else { return Hit::Unknown };
        if right == 0 {
            return Hit::Miss;
        }
        let Ok(v) = subtree_last(right) else { return Hit::Unknown };
        if start > v {
            return Hit::Miss;
        }
        node = right;
    }
    Hit::Unknown
}

#[inline(always)]
fn count(map: &aya_ebpf::maps::PerCpuHashMap<CgroupKey, u64>, l: &KernelLayout, mm: u64) {
    let (cgroup_id, flags) = mm_owner_memcg(l, mm);
    if let Some(n) = per_cpu_entry(map, &CgroupKey { cgroup_id, flags, _pad: 0 }, &0) {
        unsafe { *n += 1 };
    }
}

#[fentry]
pub fn interval_read_fentry(ctx: FEntryContext) -> i32 {
    read_begin(ctx.arg::<u64>(0));
    0
}

#[fexit]
pub fn interval_read_fexit(ctx: FExitContext) -> i32 {
    // mmu_interval_read_begin(interval_sub) has one argument; the returned sequence follows it.
    read_returned(ctx.arg::<u64>(1));
    0
}

#[fexit]
pub fn hmm_fault_fexit(ctx: FExitContext) -> i32 {
    // hmm_range_fault(range) has one argument; the return value follows it.
    hmm_returned(ctx.arg::<u64>(0), ctx.arg::<i64>(1) as i32 as i64);
    0
}

#[kprobe]
pub fn interval_read_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(sub) = ctx.arg::<u64>(0) {
        read_begin(sub);
    }
    0
}

#[kretprobe]
pub fn interval_read_kretprobe(ctx: RetProbeContext) -> u32 {
    read_returned(ctx.ret::<u64>());
    0
}

#[kprobe]
pub fn hmm_fault_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(range) = ctx.arg::<u64>(0) {
        let _ = KPROBE_STASH.insert(threads::tid() as u64 | STASH_HMM, range, 0);
    }
    0
}

#[kretprobe]
pub fn hmm_fault_kretprobe(ctx: RetProbeContext) -> u32 {
    let key = threads::tid() as u64 | STASH_HMM;
    if let Some(range) = unsafe { KPROBE_STASH.get(key) }.copied() {
        let _ = KPROBE_STASH.remove(key);
        hmm_returned(range, ctx.ret::<u64>() as i32 as i64);
    }
    0
}
