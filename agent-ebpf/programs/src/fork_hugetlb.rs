//! Fork copies of pinned hugetlb pages: `copy_hugetlb_page_range` (fork's copy of one hugetlb VMA) allocates a new
//! huge page and copies it when the parent's anonymous hugetlb folio may be DMA-pinned (since 5.13), then installs
//! it in the child with the hugetlb anon-rmap call. That path neither adds a small-page anon rmap nor allocates an
//! order-0 page, so the `fork` programs do not see it.
//!
//! The window is the copy of one hugetlb VMA, which only fork runs: a process with no hugetlb VMA never enters it.
//! The per-copy hook sits on every hugetlb anonymous fault too, so it first asks, with two loads, whether the rmap
//! is for another mm than the current task's (a fault maps into the task's own mm); then whether the thread is
//! inside the window. A copy whose source PTE changed meanwhile is freed and retried without the rmap call, so
//! the rmap counts each installed copy once.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe, map},
    maps::{LruHashMap, PerCpuHashMap},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use mmuscope_abi::{CgroupKey, CountBytes};

use crate::{
    cgroup::{current_task_mm, load, mm_owner_memcg, read},
    layout_field,
    maps::{LAYOUT, per_cpu_entry},
    threads::tid,
};

/// x86-64's base page: a folio's size is its page count (from the kernel) shifted by this.
const PAGE_SHIFT: u32 = 12;

/// Hugetlb VMA copies in progress, per thread id: the owner memcg of the mm being copied. LRU so that a record
/// whose exit was missed cannot hold a slot forever.
#[map]
static FORK_HUGETLB_WINDOWS: LruHashMap<u32, CgroupKey> = LruHashMap::with_max_entries(1024, 0);

/// Huge pages copied at fork and their bytes, per memory cgroup of the parent mm's owner. Size set by the agent.
#[map]
static FORK_HUGETLB_STATS: PerCpuHashMap<CgroupKey, CountBytes> = PerCpuHashMap::with_max_entries(4096, 0);

/// Opens the window keyed by the memcg of the owner of `src`, the parent mm (the copy is charged to the same
/// attribution as the small-page fork copies).
#[inline(always)]
fn open(src_mm: u64) {
    let layout = LAYOUT.load();
    let (cgroup_id, flags) = mm_owner_memcg(&layout, src_mm);
    let _ = FORK_HUGETLB_WINDOWS.insert(tid(), CgroupKey { cgroup_id, flags, _pad: 0 }, 0);
}

#[inline(always)]
fn close() {
    let _ = FORK_HUGETLB_WINDOWS.remove(tid());
}

/// Whether an rmap for a VMA of `vma_mm` is for another mm than the current task's.
#[inline(always)]
fn for_foreign_mm(vma_mm: u64) -> bool {
    vma_mm != current_task_mm()
}

/// Counts one copied huge page of `nr_pages` base pages in the thread's window, if one is open.
#[inline(always)]
fn count(nr_pages: u32) {
    let Some(key) = (unsafe { FORK_HUGETLB_WINDOWS.get(tid()) }).copied() else { return };
    let Some(s) = per_cpu_entry(&FORK_HUGETLB_STATS, &key, &CountBytes::default()) else { return };
    // SAFETY: per-CPU value owned by this CPU while the program runs.
    unsafe {
        (*s).count += 1;
        (*s).bytes += u64::from(nr_pages) << PAGE_SHIFT;
    }
}

/// `copy_hugetlb_page_range(dst, src, dst_vma, src_vma)`.
#[fentry]
pub fn fork_hugetlb_window_fentry(ctx: FEntryContext) -> i32 {
    let src: u64 = ctx.arg(1);
    open(src);
    0
}

#[fexit]
pub fn fork_hugetlb_window_fexit(_ctx: FExitContext) -> i32 {
    close();
    0
}

/// The hugetlb anon-rmap call of each installed copy: `hugetlb_add_new_anon_rmap(folio, vma, address)` (6.x),
/// `hugepage_add_new_anon_rmap(page, vma, address)` before (the head page, where the folio fields sit). The page
/// count is read with a probe read: on 6.1 the argument is typed `struct page *`, and the verifier refuses a direct
/// load past that struct's 64 bytes, where the folio's second page holds it.
#[fentry]
pub fn fork_hugetlb_copy_fentry(ctx: FEntryContext) -> i32 {
    let folio: u64 = ctx.arg(0);
    let vma: *const u8 = ctx.arg(1);
    let (vma_mm, nr_pages) = (layout_field!(vma_mm), layout_field!(folio_nr_pages));
    if for_foreign_mm(unsafe { load(vma, vma_mm) })
        && let Ok(nr_pages) = unsafe { read::<u32>(folio, nr_pages) }
    {
        count(nr_pages);
    }
    0
}

#[kprobe]
pub fn fork_hugetlb_window_kprobe(ctx: ProbeContext) -> u32 {
    let Some(src) = ctx.arg::<u64>(1) else { return 0 };
    open(src);
    0
}

#[kretprobe]
pub fn fork_hugetlb_window_kretprobe(_ctx: RetProbeContext) -> u32 {
    close();
    0
}

#[kprobe]
pub fn fork_hugetlb_copy_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(folio), Some(vma)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else { return 0 };
    let (vma_mm, nr_pages) = (layout_field!(vma_mm), layout_field!(folio_nr_pages));
    if let Ok(vma_mm) = unsafe { read::<u64>(vma, vma_mm) }
        && for_foreign_mm(vma_mm)
        && let Ok(nr_pages) = unsafe { read::<u32>(folio, nr_pages) }
    {
        count(nr_pages);
    }
    0
}
