//! Why an invalidation happened: the `cause` label of `invalidations_total`.
//!
//! The eBPF side tags each bracket (or, in tracepoint mode, each `kvm_unmap_hva_range` event)
//! with the innermost known cause: first a caller window opened by a cause hook (fentry/kprobe
//! on functions such as `__split_huge_pmd` or `shrink_folio_list`), else the context of the
//! current task (the system call it is in, a page fault, a kernel thread, reclaim).

/// A cause. The numeric values are the ABI: they are stored in map keys.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cause {
    /// Nothing identified the caller (e.g. no `pt_regs` layout on this architecture).
    Unknown = 0,
    /// `madvise(MADV_DONTNEED/FREE/…)`, `process_madvise`.
    Madvise = 1,
    /// `munmap`, `brk` shrink, `mmap(MAP_FIXED)` over a mapping.
    Munmap = 2,
    /// `mremap`.
    Mremap = 3,
    /// `mprotect`, `pkey_mprotect`.
    Mprotect = 4,
    /// `fork`/`clone`: write-protecting the parent's COW pages (`copy_page_range`).
    Fork = 5,
    /// Process exit (`exit_mmap`).
    Exit = 6,
    /// A page fault (COW break, userfaultfd, NUMA hinting): not inside a system call.
    PageFault = 7,
    /// Page reclaim: kswapd, direct reclaim, memcg reclaim, `MADV_PAGEOUT`.
    Reclaim = 8,
    /// Page migration: compaction, NUMA balancing, memory tiering, `migrate_pages`/`move_pages`.
    Migration = 9,
    /// NUMA hinting scans (`change_prot_numa`).
    Numa = 10,
    /// Splitting a transparent huge page (`__split_huge_pmd`).
    ThpSplit = 11,
    /// khugepaged collapsing pages into a THP.
    Khugepaged = 12,
    /// KSM merging pages (ksmd).
    Ksm = 13,
    /// Soft-dirty tracking reset (`/proc/pid/clear_refs`).
    SoftDirty = 14,
    /// userfaultfd write-protection.
    Userfaultfd = 15,
    /// Another system call (e.g. `write`, `ioctl`, `mbind`).
    OtherSyscall = 16,
    /// A kernel thread with no more specific cause (kworker, OOM reaper).
    Kthread = 17,
    /// The copy on write of a KSM page: a write (or an unsharing GUP) that breaks its sharing. Only with the
    /// `ksm_cow` family, off by default (`--probes.ksm-cow`); without it such a copy is `PageFault` (or the system
    /// call whose GUP faulted it in).
    KsmCow = 18,
}

impl Cause {
    pub const COUNT: u32 = 19;
    pub const ALL: [Cause; Cause::COUNT as usize] = [
        Cause::Unknown,
        Cause::Madvise,
        Cause::Munmap,
        Cause::Mremap,
        Cause::Mprotect,
        Cause::Fork,
        Cause::Exit,
        Cause::PageFault,
        Cause::Reclaim,
        Cause::Migration,
        Cause::Numa,
        Cause::ThpSplit,
        Cause::Khugepaged,
        Cause::Ksm,
        Cause::SoftDirty,
        Cause::Userfaultfd,
        Cause::OtherSyscall,
        Cause::Kthread,
        Cause::KsmCow,
    ];

    /// The value of the `cause` label.
    pub const fn label(self) -> &'static str {
        match self {
            Cause::Unknown => "unknown",
            Cause::Madvise => "madvise",
            Cause::Munmap => "munmap",
            Cause::Mremap => "mremap",
            Cause::Mprotect => "mprotect",
            Cause::Fork => "fork",
            Cause::Exit => "exit",
            Cause::PageFault => "page_fault",
            Cause::Reclaim => "reclaim",
            Cause::Migration => "migration",
            Cause::Numa => "numa",
            Cause::ThpSplit => "thp_split",
            Cause::Khugepaged => "khugepaged",
            Cause::Ksm => "ksm",
            Cause::SoftDirty => "soft_dirty",
            Cause::Userfaultfd => "userfaultfd",
            Cause::OtherSyscall => "other_syscall",
            Cause::Kthread => "kthread",
            Cause::KsmCow => "ksm_cow",
        }
    }

    /// The cause stored as `raw` in a map key (`Unknown` for a value this build does not know).
    pub fn from_raw(raw: u32) -> Cause {
        Cause::ALL.get(raw as usize).copied().unwrap_or(Cause::Unknown)
    }
}

/// Per-thread stack of caller windows opened by the cause hooks: one cause per byte, the
/// innermost in the lowest byte, 0 = empty. Eight levels are plenty (windows nest at most
/// two or three deep: munmap → THP split; reclaim → migration).
pub mod caller_stack {
    /// The stack with `cause` pushed.
    #[inline(always)]
    pub const fn push(stack: u64, cause: u32) -> u64 {
        (stack << 8) | (cause as u64 & 0xff)
    }

    /// The stack with its innermost window popped.
    #[inline(always)]
    pub const fn pop(stack: u64) -> u64 {
        stack >> 8
    }

    /// The innermost cause, 0 for an empty stack.
    #[inline(always)]
    pub const fn top(stack: u64) -> u32 {
        (stack & 0xff) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_round_trip() {
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(*c as u32, i as u32);
            assert_eq!(Cause::from_raw(i as u32), *c);
        }
        assert_eq!(Cause::from_raw(Cause::COUNT), Cause::Unknown);
    }

    #[test]
    fn caller_stack_is_lifo() {
        let s = caller_stack::push(caller_stack::push(0, Cause::Munmap as u32), Cause::ThpSplit as u32);
        assert_eq!(caller_stack::top(s), Cause::ThpSplit as u32);
        let s = caller_stack::pop(s);
        assert_eq!(caller_stack::top(s), Cause::Munmap as u32);
        assert_eq!(caller_stack::pop(s), 0);
    }
}
