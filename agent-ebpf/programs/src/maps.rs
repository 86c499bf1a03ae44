//! The maps several program files share, the load-time layout global, and small helpers to bump counters. A map
//! that one file's programs use is declared in that file (`fork.rs` holds `FORK_STATS`).

use aya_ebpf::{
    Global,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use aya_log_ebpf::warn;
use mmuscope_abi::{ArmRequest, Counter, InflightBracket, KernelLayout, KvmUnmapKey, ThreadState};

#[unsafe(no_mangle)]
pub static LAYOUT: Global<KernelLayout> = Global::new(KernelLayout::ZERO);

/// `kvm:kvm_unmap_hva_range` events per current-task memory cgroup (tracepoint mode).
#[map]
pub static KVM_UNMAP_COUNTS: PerCpuHashMap<KvmUnmapKey, u64> = PerCpuHashMap::with_max_entries(4096, 0);

/// kprobe mode: the `mmu_notifier_range *` of the call in progress on this thread, so that the
/// matching kretprobe (which has no arguments) can find its bracket. Key = tid | which << 32.
#[map]
pub static KPROBE_STASH: HashMap<u64, u64> = HashMap::with_max_entries(16384, 0);

/// Per-thread bracket stack and TLB-gather window (secondary-TLB context and doubles). LRU:
/// a thread that dies inside a window must not hold its entry for good.
#[map]
pub static THREADS: LruHashMap<u32, ThreadState> = LruHashMap::with_max_entries(16384, 0);

/// The attach generation of the subscription hooks (operation boundaries, TLB-gather windows, cause windows), which the
/// agent attaches only while some mm has notifier subscriptions: 0 while detached, a new number at each attach. The
/// per-thread state those hooks keep records it, so that a window whose close was missed while detached is stale.
#[map]
pub static SUBSCRIPTIONS_ARMED: Array<u32> = Array::with_max_entries(1, 0);

/// One [`ArmRequest`] (a `u64`) per event that found a group of on-demand hooks detached: the agent attaches the
/// group when it reads one. A full ring drops records; the agent also attaches at its next inventory sweep.
#[map]
pub static ARM_REQUESTS: RingBuf = RingBuf::with_byte_size(4096, 0);

/// The subscription hooks' current attach generation (0: detached).
#[inline(always)]
pub fn subscriptions_generation() -> u32 {
    SUBSCRIPTIONS_ARMED.get(0).copied().unwrap_or(0)
}

/// Asks the agent to attach a group of on-demand hooks now.
#[inline(always)]
pub fn request_arming(group: ArmRequest) {
    let _ = ARM_REQUESTS.output::<u64>(&(group as u64), 0);
}

/// `Cause` per system call number, filled by the agent (0 = another system call).
#[map]
pub static SYSCALL_CAUSES: Array<u32> = Array::with_max_entries(SYSCALL_SLOTS, 0);

/// System call numbers the cause table covers (x86-64 has about 460).
pub const SYSCALL_SLOTS: u32 = 512;

/// One field of `LAYOUT` (a volatile read of that field only; `Global::load` copies the whole struct).
#[macro_export]
macro_rules! layout_field {
    ($field:ident) => {
        unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!(
                (*(core::ptr::addr_of!($crate::maps::LAYOUT) as *const mmuscope_abi::KernelLayout)).$field
            ))
        }
    };
}

/// Brackets between `invalidate_range_start` entry and `_end` return (`brackets.rs`); `cause.rs` re-tags the
/// innermost one when a PMD is split inside it. LRU so that a missed end (kretprobe overflow, detach mid-bracket)
/// cannot fill it for good.
#[map]
pub static INFLIGHT: LruHashMap<u64, InflightBracket> = LruHashMap::with_max_entries(16384, 0);

/// The programs' own error accounting, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Adds one to `counter` on this CPU and returns the new per-CPU value.
#[inline(always)]
pub fn bump(counter: Counter) -> u64 {
    match COUNTERS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other writer, no atomics needed (the BPF target has no CAS).
        Some(p) => unsafe {
            *p += 1;
            *p
        },
        None => 0,
    }
}

/// Returns the per-CPU value for `key`, inserting a zeroed one first if needed.
#[inline(always)]
pub fn per_cpu_entry<K, V: Copy>(map: &PerCpuHashMap<K, V>, key: &K, zero: &V) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    // BPF_NOEXIST: a racing insert from another CPU is fine, the lookup below finds it.
    if map.insert(key, zero, 1).is_err() && map.get_ptr_mut(key).is_none() {
        let dropped = bump(Counter::MapFull);
        // Log at powers of two only: a full map would otherwise flood the log ring.
        if dropped.is_power_of_two() {
            warn!(&(), "aggregation map full: {} updates dropped on this CPU so far", dropped);
        }
        return None;
    }
    map.get_ptr_mut(key)
}
