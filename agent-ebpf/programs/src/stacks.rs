//! On-demand kernel stacks: while the agent runs a stack request it sets `STACK_FILTER.armed`; the hooks that
//! call [`capture`] then store the kernel stack (`bpf_get_stackid`) and count it per (owner cgroup, kind, stack).
//!
//! Off, a hook pays [`armed`]: one load from a map value the verifier resolves at load time, and a branch — no
//! helper call, no map lookup. With `--stacks.disable` the agent loads [`STACKS_ENABLED`] as 0: a read-only
//! global, so the verifier knows the branch is never taken and drops the capture from every program (which is
//! also what the `stacks` benchmark compares the idle check with).

use aya_ebpf::{
    EbpfContext, Global,
    btf_maps::StackTrace,
    macros::{btf_map, map},
    maps::PerCpuHashMap,
    programs::tracing::StackIdContext,
};
use mmuscope_abi::{STACK_DEPTH, STACK_LOST, StackFilter, StackKey, StackKind};

use crate::maps::per_cpu_entry;

/// 0 when the agent runs with `--stacks.disable` (set at load time; read-only afterwards).
#[unsafe(no_mangle)]
static STACKS_ENABLED: Global<u8> = Global::new(1);

/// Written by the agent (the map `.data.stacks`), never by the programs.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".data.stacks")]
static mut STACK_FILTER: StackFilter = StackFilter { armed: 0, kinds: 0, cgroup_id: 0 };

/// Kernel stacks of the current request, deduplicated by the kernel. Emptied by the agent after each request.
#[btf_map]
static STACK_TRACES: StackTrace<1024, 0, STACK_DEPTH> = StackTrace::new();

/// Events per (owner cgroup, kind, stack id) of the current request. Emptied by the agent after each request.
#[map]
pub static STACK_COUNTS: PerCpuHashMap<StackKey, u64> = PerCpuHashMap::with_max_entries(2048, 0);

/// True while a stack request runs.
#[inline(always)]
pub fn armed() -> bool {
    // SAFETY: a plain aligned load of a map value; the agent writes it with a map update.
    STACKS_ENABLED.load() != 0 && unsafe { core::ptr::read_volatile(core::ptr::addr_of!(STACK_FILTER.armed)) != 0 }
}

/// Counts the current kernel stack under (`cgroup_id`, `kind`, `detail`: see [`StackKey::detail`]) if the running
/// request asks for them. Call only after [`armed`] returned true.
#[inline(always)]
pub fn capture<C: EbpfContext + StackIdContext>(ctx: &C, kind: StackKind, detail: u32, cgroup_id: u64, flags: u32) {
    // SAFETY: as in `armed`.
    let (kinds, only) = unsafe {
        (
            core::ptr::read_volatile(core::ptr::addr_of!(STACK_FILTER.kinds)),
            core::ptr::read_volatile(core::ptr::addr_of!(STACK_FILTER.cgroup_id)),
        )
    };
    if kinds & kind.bit() == 0 || (only != 0 && only != cgroup_id) {
        return;
    }
    let stack_id = match ctx.get_stackid(&STACK_TRACES, 0) {
        Ok(id) => id as u32,
        Err(_) => STACK_LOST,
    };
    let key = StackKey { cgroup_id, flags, kind: kind as u32, stack_id, detail };
    if let Some(n) = per_cpu_entry(&STACK_COUNTS, &key, &0) {
        // SAFETY: per-CPU value owned by this CPU while the program runs.
        unsafe { *n += 1 };
    }
}
