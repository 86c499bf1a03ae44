//! Slow brackets: one record per bracket at least as long as the agent's `--slow.min-duration`,
//! sent through a ring buffer for `/api/v1/slow` (fentry and kprobe modes).

/// One completed bracket.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Bytes of `stack` the kernel filled (8 per frame); 0 when the stack could not be taken.
    pub stack_bytes: u32,
    pub comm: [u8; 16],
    /// Kernel stack where the bracket ended (`invalidate_range_end`'s callers), innermost first: the path that
    /// opened it too, as the same function closes what it opened.
    pub stack: [u64; crate::STACK_DEPTH],
}

impl Default for SlowBracket {
    // By hand: `Default` is not derived for arrays longer than 32.
    fn default() -> Self {
        Self {
            t_end_ns: 0,
            duration_ns: 0,
            cgroup_id: 0,
            start: 0,
            end: 0,
            flags: 0,
            event: 0,
            cause: 0,
            tgid: 0,
            tid: 0,
            stack_bytes: 0,
            comm: [0; 16],
            stack: [0; crate::STACK_DEPTH],
        }
    }
}

impl SlowBracket {
    /// The frames the kernel filled, innermost first.
    pub fn frames(&self) -> &[u64] {
        let n = (self.stack_bytes as usize / 8).min(self.stack.len());
        &self.stack[..n]
    }
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for SlowBracket {}
