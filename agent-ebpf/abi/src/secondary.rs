//! Secondary-TLB invalidations and double notifications.
//!
//! Kernels before 6.6 call `->invalidate_range` through `__mmu_notifier_invalidate_range`
//! (in-lock clears, `tlb_flush_mmu_tlbonly`) and once more inside
//! `__mmu_notifier_invalidate_range_end` unless `only_end`; 6.6+ call
//! `->arch_invalidate_secondary_tlbs` from the architecture's TLB flush.

/// Where a secondary-TLB invalidation happened, relative to the thread's open windows.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// Inside an invalidate_range_start/_end bracket of the same mm (innermost).
    Bracket = 0,
    /// Inside a `tlb_gather_mmu` .. `tlb_finish_mmu` window of the same mm, outside brackets.
    Gather = 1,
    /// Neither.
    Outside = 2,
}

/// Extent of a secondary-TLB invalidation.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Range = 0,
    /// `(0, ~0UL)`: the whole address space (x86 batched unmap, arm64 `flush_tlb_mm`).
    FullMm = 1,
}

/// One way the same secondary range gets invalidated more than once for one operation.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoubleKind {
    /// Pre-6.6: `->invalidate_range` called in the page-table lock, then again by `_end`.
    EndAfterInLock = 0,
    /// Pre-6.6: `_end`'s `->invalidate_range`, then again by the TLB-gather flush.
    EndThenGather = 1,
    /// Overlapping secondary-TLB calls within one bracket or gather window.
    OverlappingSecondaryTlb = 2,
    /// Not a double: `_end(range, only_end = true)` skipped the repeat.
    Avoided = 3,
    /// A bracket overlapping an earlier (or still open) bracket on the same mm within one
    /// operation of the same thread (one system call or one page fault): start/end subscribers
    /// invalidate the overlap twice, e.g. a THP split then the unmap of half of it.
    OverlappingBrackets = 4,
}

impl DoubleKind {
    pub const COUNT: usize = 5;
    pub const ALL: [DoubleKind; Self::COUNT] = [
        Self::EndAfterInLock,
        Self::EndThenGather,
        Self::OverlappingSecondaryTlb,
        Self::Avoided,
        Self::OverlappingBrackets,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| *k as u32 == v)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::EndAfterInLock => "end_after_in_lock",
            Self::EndThenGather => "end_then_gather",
            Self::OverlappingSecondaryTlb => "overlapping_secondary_tlb",
            Self::Avoided => "avoided",
            Self::OverlappingBrackets => "overlapping_brackets",
        }
    }
}

/// Aggregation key of secondary-TLB invalidations.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SecondaryKey {
    pub cgroup_id: u64,
    pub flags: u32,
    /// [`Scope`] as u8.
    pub scope: u8,
    /// [`Context`] as u8.
    pub context: u8,
    pub _pad: u16,
}

/// Aggregation key of double notifications.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DoubleKey {
    pub cgroup_id: u64,
    pub flags: u32,
    /// [`DoubleKind`] as u32.
    pub kind: u32,
    /// The subscribers the repeated invalidation reached (a [`crate::subscriber_mask`]): the secondary-TLB
    /// implementers for secondary-TLB doubles, the bracket's subscribers for overlapping brackets and avoided ones.
    pub subscribers: u32,
    pub _pad: u32,
}

/// Count and bytes (redundant bytes for doubles).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountBytes {
    pub count: u64,
    pub bytes: u64,
}

/// `change_pte` notifications (kernels that still have them), split by whether a bracket of the same mm was open on the
/// thread: inside one, KVM's handler finds the invalidation in progress and does nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangePteCounts {
    pub bracket: u64,
    pub outside: u64,
}

/// Ranges already invalidated in one bracket or gather window, with where each came from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Intervals {
    pub start: [u64; Intervals::N],
    pub end: [u64; Intervals::N],
    /// 0 = a secondary-TLB call, 1 = the implicit call of `_end` (pre-6.6).
    pub from_end: [u8; Intervals::N],
    pub len: u32,
    pub _pad: u32,
}

/// What a range found among the ones recorded before it ([`Intervals::overlap_and_record`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overlap {
    /// It overlapped at least one recorded range: a double notification.
    pub any: bool,
    /// Bytes of it already invalidated (added up over the ranges it overlaps). Two whole-mm calls overlap by an amount
    /// nobody knows here (the mm's mapped size): they count as a double of 0 bytes.
    pub bytes: u64,
    /// One of the ranges it overlaps came from an `_end` call.
    pub by_end: bool,
}

impl Intervals {
    pub const N: usize = 4;

    /// What `[s, e)` overlaps among the recorded ranges, then records it. (Overlaps with several earlier ranges add
    /// up, which can only over-count a range invalidated three or more times — still redundant each time.) A range
    /// that continues a recorded one of the same origin (`[s, e)` starts where it ends or ends where it starts) and
    /// overlaps none extends it instead of taking a slot: reclaim ends one 4 KiB bracket per page in address order
    /// inside one gather window, and the gather flush then covers all of them, more than [`Intervals::N`] separate
    /// slots could remember. A range inside a recorded one of the same origin is not recorded again. Whole-mm calls
    /// are `[0, u64::MAX)`.
    #[inline(always)]
    pub fn overlap_and_record(&mut self, s: u64, e: u64, from_end: bool) -> Overlap {
        let mut out = Overlap::default();
        let whole = s == 0 && e == u64::MAX;
        let mut extends = None;
        let mut contained = false;
        let n = (self.len as usize).min(Self::N);
        for i in 0..Self::N {
            if i >= n {
                break;
            }
            let lo = if self.start[i] > s { self.start[i] } else { s };
            let hi = if self.end[i] < e { self.end[i] } else { e };
            if hi > lo {
                out.any = true;
                contained |= self.from_end[i] == from_end as u8 && self.start[i] <= s && e <= self.end[i];
                if !(whole && self.start[i] == 0 && self.end[i] == u64::MAX) {
                    out.bytes = out.bytes.saturating_add(hi - lo);
                }
                out.by_end |= self.from_end[i] != 0;
            } else if extends.is_none()
                && self.from_end[i] == from_end as u8
                && (self.end[i] == s || self.start[i] == e)
            {
                extends = Some(i);
            }
        }
        // Only a range that overlaps nothing recorded extends one: an overlapping one keeps its own slot.
        if !out.any
            && let Some(i) = extends
            && let (Some(a), Some(b)) = (self.start.get_mut(i), self.end.get_mut(i))
        {
            if *b == s {
                *b = e;
            } else {
                *a = s;
            }
            return out;
        }
        // Inside a recorded range of the same origin, it adds nothing to remember: recording it would push out the
        // range that covers it. (6.11+ reclaim of a PMD-mapped THP: a whole-mm call, then one per page.)
        if contained {
            return out;
        }
        // Keep the newest N ranges.
        let slot = (self.len as usize) % Self::N;
        if let (Some(a), Some(b), Some(c)) =
            (self.start.get_mut(slot), self.end.get_mut(slot), self.from_end.get_mut(slot))
        {
            *a = s;
            *b = e;
            *c = from_end as u8;
        }
        self.len = self.len.wrapping_add(1);
        out
    }
}

/// The brackets one thread opened on one mm in its current operation (system call or fault).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    pub mm: u64,
    /// The user registers of the system call or fault, folded: a second line of defence against a missed
    /// boundary (two system calls with other arguments never share it; the brackets of one call always do).
    pub regs_key: u64,
    /// The subscription hooks' attach generation (`SUBSCRIPTIONS_ARMED`) when the record was made: a record of an
    /// earlier generation was left by an operation whose boundary fell while the hooks were detached, and is stale.
    pub generation: u64,
    pub seen: Intervals,
}

/// An open bracket on a thread's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frame {
    pub range: u64,
    pub mm: u64,
    pub start: u64,
    pub end: u64,
    pub cgroup_id: u64,
    pub flags: u32,
    /// The subscribers the bracket reached (a [`crate::subscriber_mask`]).
    pub subscribers: u32,
    /// Secondary-TLB calls seen inside this bracket, and their bytes.
    pub sec_calls: u64,
    pub sec_bytes: u64,
    pub seen: Intervals,
}

/// Per-thread state: nested brackets and the open TLB-gather window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    pub depth: u32,
    /// The subscription hooks' attach generation when the gather window opened: a window of an earlier generation
    /// lost its close while the hooks were detached, and is not open.
    pub gather_generation: u32,
    pub frames: [Frame; ThreadState::MAX_DEPTH],
    pub gather_mm: u64,
    pub gather_seen: Intervals,
}

impl ThreadState {
    pub const MAX_DEPTH: usize = 4;
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::SecondaryKey {}
    unsafe impl aya::Pod for super::DoubleKey {}
    unsafe impl aya::Pod for super::CountBytes {}
    unsafe impl aya::Pod for super::ChangePteCounts {}
    unsafe impl aya::Pod for super::Operation {}
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHOLE: (u64, u64) = (0, u64::MAX);

    #[test]
    fn overlaps_add_up_and_disjoint_ranges_do_not_count() {
        let mut seen = Intervals::default();
        assert_eq!(seen.overlap_and_record(0x1000, 0x3000, true), Overlap::default());
        assert_eq!(seen.overlap_and_record(0x8000, 0x9000, false), Overlap::default());
        let o = seen.overlap_and_record(0x2000, 0x8800, false);
        assert_eq!(o, Overlap { any: true, bytes: 0x1000 + 0x800, by_end: true });
    }

    #[test]
    fn continuing_ranges_extend_one_slot() {
        // 256 one-page brackets in address order, then one flush over all of them: all 256 pages again.
        let mut seen = Intervals::default();
        for page in 0..256u64 {
            let o = seen.overlap_and_record(page * 0x1000, (page + 1) * 0x1000, true);
            assert!(!o.any, "page {page}");
        }
        assert_eq!(seen.len, 1, "one slot, extended");
        let o = seen.overlap_and_record(0, 256 * 0x1000, false);
        assert_eq!(o, Overlap { any: true, bytes: 256 * 0x1000, by_end: true });
    }

    #[test]
    fn whole_mm_calls_overlap_everything_and_each_other_without_a_byte_count() {
        let mut seen = Intervals::default();
        assert!(!seen.overlap_and_record(WHOLE.0, WHOLE.1, false).any);
        // A range after a whole-mm call: all of it again.
        assert_eq!(seen.overlap_and_record(0x1000, 0x3000, false), Overlap { any: true, bytes: 0x2000, by_end: false });
        // A second whole-mm call: a double of 0 bytes (the finite range inside the first was not recorded again).
        assert_eq!(seen.overlap_and_record(WHOLE.0, WHOLE.1, false), Overlap { any: true, bytes: 0, by_end: false });
        // A finite range recorded before a whole-mm call counts its bytes in the next one.
        let mut range_first = Intervals::default();
        range_first.overlap_and_record(0x1000, 0x3000, false);
        range_first.overlap_and_record(WHOLE.0, WHOLE.1, false);
        assert_eq!(
            range_first.overlap_and_record(WHOLE.0, WHOLE.1, false),
            Overlap { any: true, bytes: 0x2000, by_end: false }
        );
        let mut only_whole = Intervals::default();
        only_whole.overlap_and_record(WHOLE.0, WHOLE.1, false);
        assert_eq!(
            only_whole.overlap_and_record(WHOLE.0, WHOLE.1, false),
            Overlap { any: true, bytes: 0, by_end: false }
        );
    }

    #[test]
    fn ranges_inside_a_recorded_one_keep_it() {
        // 6.11+ reclaim of a PMD-mapped THP in one bracket: a whole-mm call, then one call per page of the 2 MiB.
        let mut seen = Intervals::default();
        assert!(!seen.overlap_and_record(WHOLE.0, WHOLE.1, false).any);
        let (mut doubles, mut bytes) = (0, 0);
        for page in 0..512u64 {
            let o = seen.overlap_and_record(0x200000 + page * 0x1000, 0x200000 + (page + 1) * 0x1000, false);
            doubles += u64::from(o.any);
            bytes += o.bytes;
        }
        assert_eq!((doubles, bytes), (512, 0x200000), "every page call lies inside the whole-mm call");
        assert_eq!(seen.len, 1, "only the whole-mm call is remembered");
        // Another origin is remembered on its own (its kind depends on it).
        assert!(seen.overlap_and_record(0x200000, 0x201000, true).any);
        assert_eq!(seen.len, 2);
    }

    #[test]
    fn the_newest_n_ranges_are_kept() {
        let mut seen = Intervals::default();
        for i in 0..(Intervals::N as u64 + 1) {
            seen.overlap_and_record(i * 0x10000, i * 0x10000 + 0x1000, false);
        }
        // The first range was replaced by the fifth.
        assert!(!seen.overlap_and_record(0, 0x1000, false).any);
        assert!(seen.overlap_and_record(0x40000, 0x41000, false).any);
    }
}
