//! Subscriber inventory: an `iter/task` program that writes, for every thread-group leader with
//! an mm that has mmu_notifier subscriptions or long-term pinned pages, one
//! [`SubscriberRecord`] for the mm and one per `struct mmu_notifier` on its list (ops and
//! callback pointers; user space names them through kallsyms), plus the first interval
//! notifier. The agent runs it by creating an iterator fd and reading it (a "sweep").
//!
//! Register/unregister/exit hooks only bump [`SUBSCRIBER_CHANGES`], which tells the agent a
//! new sweep is due; they never walk anything themselves.
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
    HAS_PINNED_UNKNOWN, HAS_PINNED_WORD, KernelLayout, MAX_NOTIFIERS, NO_CHANGE_PTE, SubscriberLayout,
    SubscriberRecord, record_kind,
};

use crate::{
    cgroup::{mm_owner_memcg, read},
    maps::LAYOUT,
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
    interval_node_to_notifier: 0,
    interval_ops: 0,
    interval_ops_invalidate: 0,
    ops_release: 0,
    ops_start: 0,
    ops_end: 0,
    ops_change_pte: NO_CHANGE_PTE,
});

/// Bumped (per CPU) whenever a subscription may have appeared or gone; the agent re-sweeps
/// when the sum changed.
#[map]
pub static SUBSCRIBER_CHANGES: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

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
        let interval = itree_node - s.interval_node_to_notifier as u64;
        let ops: u64 = unsafe { read(interval, s.interval_ops)? };
        reset(c, record_kind::INTERVAL, tgid, mm, ops);
        if ops != 0 {
            c.callbacks[0] = unsafe { read(ops, s.interval_ops_invalidate)? };
        }
        emit(seq, c);
    }
    Ok(())
}

/// Makes `r` a fresh record of `kind` (every other field zero).
#[inline(always)]
fn reset(r: &mut SubscriberRecord, kind: u32, tgid: u32, mm: u64, ops: u64) {
    // SAFETY: a plain-data struct, for which all zero bytes are a valid value.
    unsafe { core::ptr::write_bytes(r as *mut SubscriberRecord, 0, 1) };
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
changed_fexit!(
    sub_register_fexit,
    sub_unregister_fexit,
    sub_put_fexit,
    sub_interval_insert_fexit,
    sub_interval_insert_locked_fexit,
    sub_interval_remove_fexit
);

macro_rules! changed_kretprobe {
    ($($name:ident),*) => {$(
        #[kretprobe]
        pub fn $name(_ctx: RetProbeContext) -> u32 {
            changed();
            0
        }
    )*};
}
changed_kretprobe!(
    sub_register_kretprobe,
    sub_unregister_kretprobe,
    sub_put_kretprobe,
    sub_interval_insert_kretprobe,
    sub_interval_insert_locked_kretprobe,
    sub_interval_remove_kretprobe
);

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
