//! Per-subscriber callback latency: one kprobe/kretprobe pair attached by the agent to each
//! resolved subscriber callback (e.g. `kvm_mmu_notifier_invalidate_range_start`). The entry
//! stashes the probed function's address (`bpf_get_func_ip`) and the time per thread; the
//! return (which has no arguments) takes it back and records the duration under that address.
//! User space maps addresses back to (subscriber, callback) from the inventory.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_func_ip},
    macros::{kprobe, kretprobe, map},
    maps::{HashMap, PerCpuHashMap},
    programs::{ProbeContext, RetProbeContext},
};
use mmuscope_abi::BracketStats;

use crate::maps::per_cpu_entry;

/// Thread id → (callback address, entry time). A callback does not nest within itself on one thread.
#[map]
pub static CALLBACK_STASH: HashMap<u32, [u64; 2]> = HashMap::with_max_entries(16384, 0);

/// Callback address (as `bpf_get_func_ip` reports it) → duration histogram.
#[map]
pub static CALLBACK_STATS: PerCpuHashMap<u64, BracketStats> = PerCpuHashMap::with_max_entries(256, 0);

#[kprobe]
pub fn callback_entry_kprobe(ctx: ProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    let ip = unsafe { bpf_get_func_ip(ctx.regs as *mut _) };
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = CALLBACK_STASH.insert(tid, [ip, now], 0);
    0
}

#[kretprobe]
pub fn callback_return_kretprobe(_ctx: RetProbeContext) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(&[ip, start]) = (unsafe { CALLBACK_STASH.get(tid) }) else { return 0 };
    let _ = CALLBACK_STASH.remove(tid);
    let zero = BracketStats::default();
    if let Some(stats) = per_cpu_entry(&CALLBACK_STATS, &ip, &zero) {
        // SAFETY: per-CPU value owned by this CPU while the program runs.
        unsafe { (*stats).record(now.saturating_sub(start)) };
    }
    0
}
