//! `change_pte` notifications: `__mmu_notifier_change_pte(mm, address, pte)`, which `set_pte_at_notify` calls for
//! every mm with notifier subscriptions on kernels that still have it (removed in 2024): KSM's `write_protect_page`
//! and `replace_page`, the copy of a write fault in `wp_page_copy`, uprobes' `__replace_page`. Since 2012
//! (6bdb913f0a70) every caller runs it inside an invalidate_range_start/_end bracket of the same page, where KVM's
//! handler sees the invalidation in progress and returns: the notification is wasted. Counted per owner cgroup and
//! by whether a bracket of the same mm is open on the thread (the bracket programs' per-thread stack).

use aya_ebpf::{
    macros::{fentry, kprobe, map},
    maps::PerCpuHashMap,
    programs::{FEntryContext, ProbeContext},
};
use mmuscope_abi::{CgroupKey, ChangePteCounts};

use crate::{
    cgroup::mm_owner_memcg,
    maps::{LAYOUT, THREADS, per_cpu_entry},
    threads::{self, top},
};

/// `change_pte` notifications per owner cgroup, inside and outside a bracket. Size set by the agent.
#[map]
static CHANGE_PTE_STATS: PerCpuHashMap<CgroupKey, ChangePteCounts> = PerCpuHashMap::with_max_entries(4096, 0);

/// One notification on `mm`: attributed like the bracket it sits in (the bracket's owner cgroup), else to the mm
/// owner's memory cgroup.
#[inline(always)]
fn change_pte(mm: u64) {
    let mut in_bracket = None;
    if let Some(ts) = THREADS.get_ptr_mut(threads::tid())
        && let Some(f) = top(ts)
        && unsafe { (*f).mm } == mm
    {
        in_bracket = Some(unsafe { ((*f).cgroup_id, (*f).flags) });
    }
    let (cgroup_id, flags) = match in_bracket {
        Some(owner) => owner,
        None => mm_owner_memcg(&LAYOUT.load(), mm),
    };
    let key = CgroupKey { cgroup_id, flags, _pad: 0 };
    let Some(v) = per_cpu_entry(&CHANGE_PTE_STATS, &key, &ChangePteCounts::default()) else { return };
    // SAFETY: per-CPU value owned by this CPU while the program runs.
    unsafe {
        if in_bracket.is_some() {
            (*v).bracket += 1;
        } else {
            (*v).outside += 1;
        }
    }
}

#[fentry]
pub fn change_pte_fentry(ctx: FEntryContext) -> i32 {
    change_pte(ctx.arg(0));
    0
}

#[kprobe]
pub fn change_pte_kprobe(ctx: ProbeContext) -> u32 {
    if let Some(mm) = ctx.arg::<u64>(0) {
        change_pte(mm);
    }
    0
}
