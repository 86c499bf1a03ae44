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

impl Intervals {
    pub const N: usize = 4;
}

/// The brackets one thread opened on one mm in its current operation (system call or fault).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Operation {
    pub mm: u64,
    /// The user registers of the system call or fault, folded: a second line of defence against a missed
    /// boundary (two system calls with other arguments never share it; the brackets of one call always do).
    pub regs_key: u64,
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
    pub _pad: u32,
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
    pub _pad: u32,
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
