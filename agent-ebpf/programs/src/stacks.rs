//! On-demand kernel stacks: while the agent runs a stack request it sets `STACK_FILTER.armed`; the hooks that
//! call [`capture`] then store the kernel stack (`bpf_get_stack`, filed under a hash of its frames) and count it per
//! (owner cgroup, kind, stack).
//!
//! Off, a hook pays [`armed`]: one load from a map value the verifier resolves at load time, and a branch — no
//! helper call, no map lookup. With `--stacks.disable` the agent loads [`STACKS_ENABLED`] as 0: a read-only
//! global, so the verifier knows the branch is never taken and drops the capture from every program (which is
//! also what the `stacks` benchmark compares the idle check with).

use aya_ebpf::{
    EbpfContext, Global,
    bindings::BPF_NOEXIST,
    helpers::generated::bpf_get_stack,
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
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

/// Kernel stacks of the current request by id (a 32-bit hash of the frames, taken here), innermost frame first and
/// 0 after the last. Emptied by the agent after each request. Not the kernel's stack map (`bpf_get_stackid`): it
/// files a stack in the bucket of its frames' hash modulo the map's size, with a fixed seed, and refuses a second
/// stack whose bucket is taken. Since KASLR moves the addresses at every boot, two stacks of one request then
/// collided at random (about one request in a hundred with five stacks), and every event of the second was lost.
#[map]
static STACK_TRACES: HashMap<u32, [u64; STACK_DEPTH]> = HashMap::with_max_entries(1024, 0);

/// Where [`stack_id`] takes the frames (512 bytes: more than a program's stack may hold).
#[map]
static STACK_SCRATCH: PerCpuArray<[u64; STACK_DEPTH]> = PerCpuArray::with_max_entries(1, 0);

/// `-EEXIST`: the id is stored already (this stack, met before in the request).
const EEXIST: i32 = -17;

/// The current kernel stack's id in [`STACK_TRACES`], stored there if new; [`STACK_LOST`] if it cannot be taken or
/// the map is full. Two different stacks get one id with a chance of 2^-32 per pair; the second then counts under
/// the first one's frames.
#[inline(always)]
fn stack_id<C: EbpfContext>(ctx: &C) -> u32 {
    let Some(frames) = STACK_SCRATCH.get_ptr_mut(0) else { return STACK_LOST };
    // SAFETY: `frames` is this CPU's scratch value, STACK_DEPTH u64s long.
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), frames.cast(), (STACK_DEPTH * 8) as u32, 0) };
    if bytes <= 0 {
        return STACK_LOST;
    }
    let taken = bytes as usize / 8;
    // FNV-1a over the frames, with the unused tail zeroed so that a stack has one value whatever came before.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for i in 0..STACK_DEPTH {
        // SAFETY: `i` < STACK_DEPTH, inside the scratch value.
        let frame = unsafe { &mut (*frames)[i] };
        if i >= taken {
            *frame = 0;
        }
        hash = (hash ^ *frame).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let id = (hash ^ (hash >> 32)) as u32;
    let id = if id == STACK_LOST { id - 1 } else { id };
    // SAFETY: the value is read from the scratch map value, which outlives the call. By reference: by value it
    // would be copied onto the program's stack, which is only 512 bytes.
    #[allow(clippy::needless_borrows_for_generic_args)]
    let inserted = STACK_TRACES.insert(id, unsafe { &*frames }, BPF_NOEXIST as u64);
    match inserted {
        Ok(()) => id,
        Err(e) if e == EEXIST => id,
        Err(_) => STACK_LOST,
    }
}

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
    let stack_id = stack_id(ctx);
    let key = StackKey { cgroup_id, flags, kind: kind as u32, stack_id, detail };
    if let Some(n) = per_cpu_entry(&STACK_COUNTS, &key, &0) {
        // SAFETY: per-CPU value owned by this CPU while the program runs.
        unsafe { *n += 1 };
    }
}
