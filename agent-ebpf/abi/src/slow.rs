//! Slow brackets: one record per bracket at least as long as the agent's `--slow.min-duration`,
//! sent through a ring buffer for `/api/v1/slow` (fentry and kprobe modes).

/// One completed bracket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowBracket {
    /// `bpf_ktime_get_ns()` when the bracket ended.
    pub t_end_ns: u64,
    pub duration_ns: u64,
    /// Owner memory cgroup and its [`crate::key_flags`].
    pub cgroup_id: u64,
    /// The invalidated range.
    pub start: u64,
    pub end: u64,
    pub flags: u32,
    /// Raw `enum mmu_notifier_event`.
    pub event: u32,
    /// [`crate::Cause`] as u32.
    pub cause: u32,
    /// Process (thread group) and thread that ran the bracket.
    pub tgid: u32,
    pub tid: u32,
    pub _pad: u32,
    pub comm: [u8; 16],
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SlowBracket {}
