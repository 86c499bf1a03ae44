//! The current task's user registers at kernel entry: where they are, and their fold into one value that tells one
//! system call or fault from the next (read by the cause tags and by the operation boundaries).

use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
use mmuscope_abi::KernelLayout;

use crate::{cgroup::read, layout_field};

/// The current task's `pt_regs` at kernel entry (0 without the context fields), read once per
/// bracket for both [`crate::cause::current`] and [`user_regs_key`].
#[inline(always)]
pub fn user_regs(_layout: &KernelLayout) -> u64 {
    // Read alone as a frozen constant: without the group (e.g. no `bpf_task_pt_regs`, before 5.15) the verifier
    // drops the helper calls below.
    if layout_field!(cause_context) == 0 {
        return 0;
    }
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as u64 }
}

/// The current task's user registers at kernel entry (system call number, ip, sp and the first three
/// arguments), folded into one value: equal for every bracket of one system call or fault. 0 when the
/// context fields did not resolve.
#[inline(always)]
pub fn user_regs_key(layout: &KernelLayout, regs: u64) -> u64 {
    if regs == 0 {
        return 0;
    }
    let r = |off: u32| unsafe { read::<u64>(regs, off) }.unwrap_or(0);
    r(layout.pt_regs_orig_ax)
        ^ r(layout.pt_regs_ip).rotate_left(13)
        ^ r(layout.pt_regs_sp).rotate_left(29)
        ^ r(layout.pt_regs_di).rotate_left(41)
        ^ r(layout.pt_regs_si).rotate_left(7)
        ^ r(layout.pt_regs_dx).rotate_left(53)
}
