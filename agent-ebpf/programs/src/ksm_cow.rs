//! The `ksm_cow` family (off by default): a window over the copy a write fault makes (`wp_page_copy`, or
//! `do_wp_page` where that is inlined into it), keeping the fault's `struct vm_fault *` per thread. A bracket opened
//! inside it is `Cause::KsmCow` when the page being copied (`vmf->page`) is a KSM page: read at bracket start
//! ([`copying`], from `cause::caller_window`), where `vmf->page` is set whichever of the two functions is hooked.
//!
//! Every copy-on-write fault of every process runs the entry and return programs (one hash update and one delete),
//! which is why the agent attaches them only with `--probes.ksm-cow`.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{Array, LruHashMap},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use mmuscope_abi::{Cause, is_ksm_page};

use crate::{cgroup::read, layout_field};

/// The `struct vm_fault *` of the write fault each thread is copying in. LRU: an entry whose return was missed
/// (kretprobe overflow) must not pin its slot.
#[map]
static KSM_COW_FAULTS: LruHashMap<u32, u64> = LruHashMap::with_max_entries(16384, 0);

/// Slot 0 is 1 once the agent attached this family (`KSM_COW_FAULTS` is filled); the bracket programs skip the
/// lookup otherwise.
#[map]
static KSM_COW_ON: Array<u32> = Array::with_max_entries(1, 0);

/// `Cause::KsmCow` if thread `tid` is inside a write fault's copy of a KSM page.
#[inline(always)]
pub fn copying(tid: u32) -> Option<u32> {
    if KSM_COW_ON.get(0).is_none_or(|on| *on == 0) {
        return None;
    }
    let vmf = *unsafe { KSM_COW_FAULTS.get(tid) }?;
    let (vmf_page, compound_head, page_mapping) =
        (layout_field!(vmf_page), layout_field!(page_compound_head), layout_field!(page_mapping));
    let page = unsafe { read::<u64>(vmf, vmf_page) }.ok().filter(|p| *p != 0)?;
    let head = unsafe { read::<u64>(page, compound_head) }.ok()?;
    let mapping = unsafe { read::<u64>(page, page_mapping) }.ok()?;
    is_ksm_page(head, mapping).then_some(Cause::KsmCow as u32)
}

#[inline(always)]
fn enter(vmf: u64) {
    let _ = KSM_COW_FAULTS.insert(bpf_get_current_pid_tgid() as u32, vmf, 0);
}

#[inline(always)]
fn leave() {
    let _ = KSM_COW_FAULTS.remove(bpf_get_current_pid_tgid() as u32);
}

#[fentry]
pub fn cause_ksm_cow_fentry(ctx: FEntryContext) -> i32 {
    enter(ctx.arg(0));
    0
}

#[fexit]
pub fn cause_ksm_cow_fexit(_ctx: FExitContext) -> i32 {
    leave();
    0
}

#[kprobe]
pub fn cause_ksm_cow_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(vmf) = ctx.arg::<u64>(0) {
        enter(vmf);
    }
    0
}

#[kretprobe]
pub fn cause_ksm_cow_kretprobe(_ctx: RetProbeContext) -> u32 {
    leave();
    0
}
