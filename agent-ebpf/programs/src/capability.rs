//! A do-nothing fentry program: the agent loads it (never attaches it) to learn whether this
//! kernel accepts trampoline programs at all. Some vendor kernels refuse them with EPERM.

use aya_ebpf::{macros::fentry, programs::FEntryContext};

#[fentry]
pub fn probe_fentry(_ctx: FEntryContext) -> i32 {
    0
}
