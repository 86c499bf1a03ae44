//! Subscriber inventory: an `iter/task` program that writes, for every thread-group leader with
//! an mm that has mmu_notifier subscriptions or long-term pinned pages, one
//! [`SubscriberRecord`] for the mm, one per `struct mmu_notifier` on its list (ops and
//! callback pointers; user space names them through kallsyms), and one per interval notifier
//! in its interval tree, in address order (at most [`MAX_INTERVALS`]; see [`walk_itree`]).
//! The agent runs it by creating an iterator fd and reading it (a "sweep").
//!
//! Register/unregister/exit hooks only bump [`SUBSCRIBER_CHANGES`], which tells the agent a
//! new sweep is due; they never walk anything themselves. A registration made while the subscription hooks are
//! detached also asks the agent to attach them (`ARM_REQUESTS`).
//!
//! aya-ebpf 0.2 has no `#[iter]` macro, so the programs are declared with their ELF section
//! by hand, as the macros would.

use core::ffi::c_void;

use aya_ebpf::{
    Global,
    bindings::seq_file,
    helpers::{bpf_probe_read_kernel, generated::bpf_seq_write},
    macros::{btf_tracepoint, fexit, kretprobe, map},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, FExitContext, RetProbeContext},
};
use mmuscope_abi::{
    ArmRequest, HAS_PINNED_UNKNOWN, HAS_PINNED_WORD, ItreeWalk, KernelLayout, MAX_INTERVALS, MAX_NOTIFIERS,
    NO_CHANGE_PTE, SubscriberLayout, SubscriberRecord, itree_step, record_kind,
};

use crate::{
    cgroup::{mm_owner_memcg, read},
    maps::{LAYOUT, request_arming, subscriptions_generation},
};

#[unsafe(no_mangle)]
pub static SUBSCRIBER_LAYOUT: Global<SubscriberLayout> = Global::new(SubscriberLayout {
    task_pid: 0,
    task_tgid: 0,
    task_comm: 0,
    mm_pinned_vm: 0,
    mm_has_pinned: 0,
    has_pinned_bit: HAS_PINNED_UNKNOWN,
    itree_root: 0,
    itree_leftmost: 0,
    ops_release: 0,
    ops_start: 0,
    ops_end: 0,
    ops_change_pte: NO_CHANGE_PTE,
});

/// Bumped (per CPU) whenever a subscription may have appeared or gone; the agent re-sweeps
/// when the sum changed.
#[map]
pub static SUBSCRIBER_CHANGES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The interval-tree walk's position between steps (see [`walk_itree`]).
#[map]
static ITREE_WALK: PerCpuArray<ItreeWalk> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn changed() {
    if let Some(p) = SUBSCRIBER_CHANGES.get_ptr_mut(0) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn emit(seq: *mut seq_file, r: &SubscriberRecord) {
    unsafe {
        bpf_seq_write(seq, r as *const _ as *const c_void, core::mem::size_of::<SubscriberRecord>() as u32);
    }
}

/// `struct bpf_iter__task { struct bpf_iter_meta *meta; struct task_struct *task; }`, and
/// `meta->seq` at offset 0. Both are direct (BTF-typed) loads: `bpf_seq_write` wants the
/// verifier-typed `seq_file` pointer, not a probe-read copy.
#[inline(always)]
fn inventory(ctx: *mut c_void) -> i32 {
    let meta = unsafe { *(ctx as *const *const *mut seq_file) };
    let task = unsafe { *((ctx as *const u64).add(1)) };
    if task == 0 || meta.is_null() {
        return 0;
    }
    let seq = unsafe { *meta };
    let _ = unsafe { visit(seq, task) };
    0
}

/// The mm's has-pinned flag: bit `has_pinned_bit` of the flags word, or the 5.9–5.12 `atomic_t has_pinned`.
#[inline(always)]
pub(crate) unsafe fn has_pinned(s: &SubscriberLayout, mm: u64) -> Result<bool, ()> {
    let set = match s.has_pinned_bit {
        HAS_PINNED_UNKNOWN => false,
        HAS_PINNED_WORD => {
            let count: u32 = unsafe { read(mm, s.mm_has_pinned)? };
            count != 0
        }
        bit => {
            let flags: u64 = unsafe { read(mm, s.mm_has_pinned)? };
            (flags >> (bit & 63)) & 1 != 0
        }
    };
    Ok(set)
}

#[inline(always)]
unsafe fn visit(seq: *mut seq_file, task: u64) -> Result<(), ()> {
    let l: KernelLayout = LAYOUT.load();
    let s: SubscriberLayout = SUBSCRIBER_LAYOUT.load();
    let pid: u32 = unsafe { read(task, s.task_pid)? };
    let tgid: u32 = unsafe { read(task, s.task_tgid)? };
    if pid != tgid {
        return Ok(()); // threads share the leader's mm
    }
    let mm: u64 = unsafe { read(task, l.task_mm)? };
    if mm == 0 {
        return Ok(()); // kernel thread, or exiting
    }
    let pinned_pages: u64 = unsafe { read(mm, s.mm_pinned_vm)? };
    let subs: u64 = unsafe { read(mm, l.mm_notifier_subscriptions)? };
    let (mut first, mut itree_node) = (0u64, 0u64);
    if subs != 0 {
        first = unsafe { read(subs, l.subscriptions_list)? };
        let root: u64 = unsafe { read(subs, s.itree_root)? };
        if root != 0 {
            itree_node = unsafe { read(subs, s.itree_leftmost)? };
        }
    }
    let has_pinned = unsafe { has_pinned(&s, mm)? };
    if first == 0 && itree_node == 0 && pinned_pages == 0 && !has_pinned {
        return Ok(());
    }
    let (cgroup_id, cgroup_flags) = mm_owner_memcg(&l, mm);
    let mut r = SubscriberRecord {
        kind: record_kind::MM,
        tgid,
        mm,
        cgroup_id,
        cgroup_flags,
        pinned_pages,
        has_itree: (itree_node != 0) as u32,
        has_pinned: has_pinned as u32,
        ..Default::default()
    };
    if let Ok(comm) = unsafe { bpf_probe_read_kernel((task + s.task_comm as u64) as *const [u8; 16]) } {
        r.comm = comm;
    }
    // Count first, so the mm record (written first) carries the totals.
    let mut node = first;
    let mut n = 0u32;
    while n < MAX_NOTIFIERS && node != 0 {
        n += 1;
        node = unsafe { read(node, l.hlist_next)? };
    }
    r.notifiers = n;
    r.truncated = (node != 0) as u32;
    emit(seq, &r);

    // The other records reuse `r`, zeroed in place: a second record on the stack would pass the verifier's 512
    // bytes (with the layouts copied above).
    let c = &mut r;
    let mut node = first;
    for _ in 0..MAX_NOTIFIERS {
        if node == 0 {
            break;
        }
        let notifier = node - l.notifier_hlist as u64;
        let ops: u64 = unsafe { read(notifier, l.notifier_ops)? };
        reset(c, record_kind::NOTIFIER, tgid, mm, ops);
        if ops != 0 {
            c.callbacks[0] = unsafe { read(ops, s.ops_release)? };
            c.callbacks[1] = unsafe { read(ops, s.ops_start)? };
            c.callbacks[2] = unsafe { read(ops, s.ops_end)? };
            c.callbacks[3] = unsafe { read(ops, l.ops_secondary_tlb)? };
            if s.ops_change_pte != NO_CHANGE_PTE {
                c.callbacks[4] = unsafe { read(ops, s.ops_change_pte)? };
            }
        }
        emit(seq, c);
        node = unsafe { read(node, l.hlist_next)? };
    }
    if itree_node != 0 {
        walk_itree(seq, &l, c, tgid, mm, itree_node);
    }
    Ok(())
}

/// Steps of the interval-tree walk: an in-order walk of `n` nodes takes at most `4n + 1` (each node reported once,
/// each edge gone down once and climbed once, a switch after each descent and climb), plus the climb from the last
/// node reported to the root, at most the tree's height (a red-black tree of 2^32 nodes is at most 64 high).
const ITREE_STEPS: u32 = 4 * MAX_INTERVALS + 1 + 64;

/// Writes one INTERVAL record per interval notifier of the tree whose leftmost node is `leftmost`, in address order:
/// the kernel's `rb_first` / `rb_next` (lib/rbtree.c), one bounded step at a time. The position lives in
/// [`ITREE_WALK`], not in registers, so that the verifier sees one state per step instead of one per position and
/// count. Stops after [`MAX_INTERVALS`] records; when the tree goes on past them (or a node cannot be read, or the
/// interval-notifier offsets did not resolve) an ITREE_TRUNCATED record follows them. The tree is read without its
/// lock (removals are deferred only while an invalidation runs), so a walk racing an insert or remove may see a mix
/// of both trees: bounded, and re-swept on the change.
#[inline(always)]
fn walk_itree(seq: *mut seq_file, l: &KernelLayout, c: &mut SubscriberRecord, tgid: u32, mm: u64, leftmost: u64) {
    let Some(w) = ITREE_WALK.get_ptr_mut(0) else { return };
    if l.interval_fields == 0 {
        truncated(seq, c, tgid, mm, 0);
        return;
    }
    unsafe { core::ptr::write_volatile(w, ItreeWalk { node: leftmost, step: itree_step::EMIT, emitted: 0 }) };
    let mut finished = false;
    for _ in 0..ITREE_STEPS {
        let ItreeWalk { node, step, emitted } = unsafe { core::ptr::read_volatile(w) };
        let next = match step {
            itree_step::EMIT => {
                if emitted >= MAX_INTERVALS as u64 {
                    break; // a node the bound leaves out
                }
                if emit_interval(seq, l, c, tgid, mm, node).is_err() {
                    break;
                }
                let emitted = emitted + 1;
                unsafe { core::ptr::write_volatile(&raw mut (*w).emitted, emitted) };
                let Ok(right) = (unsafe { read::<u64>(node, l.itree_rb_right) }) else { break };
                match right {
                    0 => ItreeWalk { node, step: itree_step::CLIMB, emitted },
                    _ => ItreeWalk { node: right, step: itree_step::DESCEND, emitted },
                }
            }
            itree_step::DESCEND => {
                let Ok(left) = (unsafe { read::<u64>(node, l.itree_rb_left) }) else { break };
                match left {
                    0 => ItreeWalk { node, step: itree_step::EMIT, emitted },
                    _ => ItreeWalk { node: left, step: itree_step::DESCEND, emitted },
                }
            }
            _ => {
                let Ok(parent_color) = (unsafe { read::<u64>(node, l.itree_rb_parent) }) else { break };
                let parent = parent_color & !3;
                if parent == 0 {
                    finished = true;
                    break;
                }
                let Ok(parent_right) = (unsafe { read::<u64>(parent, l.itree_rb_right) }) else { break };
                let step = if parent_right == node { itree_step::CLIMB } else { itree_step::EMIT };
                ItreeWalk { node: parent, step, emitted }
            }
        };
        unsafe { core::ptr::write_volatile(w, next) };
    }
    if !finished {
        let emitted = unsafe { core::ptr::read_volatile(w) }.emitted;
        truncated(seq, c, tgid, mm, emitted as u32);
    }
}

/// Writes the ITREE_TRUNCATED record after `emitted` INTERVAL records.
#[inline(always)]
fn truncated(seq: *mut seq_file, c: &mut SubscriberRecord, tgid: u32, mm: u64, emitted: u32) {
    reset(c, record_kind::ITREE_TRUNCATED, tgid, mm, 0);
    c.notifiers = emitted;
    emit(seq, c);
}

/// Writes the INTERVAL record of the tree node `node` (an `rb_node`), leaving it in `c`.
#[inline(always)]
fn emit_interval(
    seq: *mut seq_file,
    l: &KernelLayout,
    c: &mut SubscriberRecord,
    tgid: u32,
    mm: u64,
    node: u64,
) -> Result<(), ()> {
    let notifier = node - l.itree_node_to_interval_sub as u64;
    let ops: u64 = unsafe { read(notifier, l.interval_sub_ops)? };
    let start: u64 = unsafe { read(node, l.itree_start)? };
    let last: u64 = unsafe { read(node, l.itree_last)? };
    reset(c, record_kind::INTERVAL, tgid, mm, ops);
    if ops != 0 {
        c.callbacks[0] = unsafe { read(ops, l.interval_ops_invalidate)? };
    }
    c.start = start;
    c.last = last;
    emit(seq, c);
    Ok(())
}

/// Makes `r` a fresh record of `kind` (every other field zero).
#[inline(always)]
fn reset(r: &mut SubscriberRecord, kind: u32, tgid: u32, mm: u64, ops: u64) {
    // Eight bytes at a time, volatile: `write_bytes` becomes a call of a byte-wise memset loop, whose hundreds of
    // instructions the verifier walks again for every record of the interval-tree walk.
    const WORDS: usize = core::mem::size_of::<SubscriberRecord>() / 8;
    const _: () = assert!(core::mem::size_of::<SubscriberRecord>().is_multiple_of(8));
    let words = r as *mut SubscriberRecord as *mut u64;
    for i in 0..WORDS {
        // SAFETY: within the record, which is 8-byte aligned plain data (all zero bytes are a valid value).
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    r.kind = kind;
    r.tgid = tgid;
    r.mm = mm;
    r.ops = ops;
}

/// One `iter/task` program per attach alternative (the probe table gives each alternative
/// its own programs); all run the same walk.
macro_rules! iter_task {
    ($($name:ident),*) => {$(
        #[unsafe(no_mangle)]
        #[unsafe(link_section = "iter/task")]
        pub fn $name(ctx: *mut c_void) -> i32 {
            inventory(ctx)
        }
    )*};
}
iter_task!(subscribers_iter_fentry, subscribers_iter_kprobe, subscribers_iter_tracepoint);

/// Hooks after which the list may differ: registration returns, unregistration and interval
/// insert/remove return (bumped after the list changed, so a sweep that follows sees it).
macro_rules! changed_fexit {
    ($($name:ident),*) => {$(
        #[fexit]
        pub fn $name(_ctx: FExitContext) -> i32 {
            changed();
            0
        }
    )*};
}
changed_fexit!(sub_unregister_fexit, sub_put_fexit, sub_interval_remove_fexit);

/// A registration (classic or interval) returned: the list changed, and if the subscription hooks are detached
/// (no mm had subscriptions at the last sweep), the agent is asked to attach them now rather than at its next sweep.
#[inline(always)]
fn registered() {
    changed();
    if subscriptions_generation() == 0 {
        request_arming(ArmRequest::Subscriptions);
    }
}

macro_rules! registered_fexit {
    ($($name:ident),*) => {$(
        #[fexit]
        pub fn $name(_ctx: FExitContext) -> i32 {
            registered();
            0
        }
    )*};
}
registered_fexit!(sub_register_fexit, sub_interval_insert_fexit, sub_interval_insert_locked_fexit);

macro_rules! changed_kretprobe {
    ($($name:ident),*) => {$(
        #[kretprobe]
        pub fn $name(_ctx: RetProbeContext) -> u32 {
            changed();
            0
        }
    )*};
}
changed_kretprobe!(sub_unregister_kretprobe, sub_put_kretprobe, sub_interval_remove_kretprobe);

macro_rules! registered_kretprobe {
    ($($name:ident),*) => {$(
        #[kretprobe]
        pub fn $name(_ctx: RetProbeContext) -> u32 {
            registered();
            0
        }
    )*};
}
registered_kretprobe!(sub_register_kretprobe, sub_interval_insert_kretprobe, sub_interval_insert_locked_kretprobe);

/// `mmap:exit_mmap(mm)` fires at the end of `exit_mmap`: an mm that had subscriptions or pins
/// is gone.
#[inline(always)]
fn exit_mmap(ctx: &BtfTracePointContext) {
    let l = LAYOUT.load();
    let s = SUBSCRIBER_LAYOUT.load();
    let mm: u64 = ctx.arg(0);
    if mm == 0 {
        return;
    }
    let subs = unsafe { read::<u64>(mm, l.mm_notifier_subscriptions) }.unwrap_or(0);
    let pinned = unsafe { read::<u64>(mm, s.mm_pinned_vm) }.unwrap_or(0);
    if subs != 0 || pinned != 0 {
        changed();
    }
}

#[btf_tracepoint]
pub fn sub_exit_mmap_fentry(ctx: BtfTracePointContext) -> i32 {
    exit_mmap(&ctx);
    0
}

#[btf_tracepoint]
pub fn sub_exit_mmap_kprobe(ctx: BtfTracePointContext) -> i32 {
    exit_mmap(&ctx);
    0
}
