//! The overlapping-brackets family: operation boundaries for the bracket programs' overlap check
//! (`double_notifications_total{kind="overlapping_brackets"}`). It runs with the bracket family in
//! fentry or kprobe mode; each mode's alternative owns its copy of the boundary program.
//!
//! An operation is told apart from the next by the user registers of its kernel entry (system-call
//! number, ip, sp, arguments). That fails only for the same call repeated with the same registers,
//! so the system calls that routinely invalidate the same range again (a `madvise` loop, a pre-fork
//! server's `fork` loop) also end the operation at their entry. Hooking those few functions, rather
//! than the `sys_enter` tracepoint, leaves every other system call on the host on its fast path; and they are
//! attached only while the inventory sees an mm with subscriptions (`probes::arming`).

use crate::probes::spec::{Family, FamilyId, Need, Traced, TracedHook};

/// x86-64 system-call entry points (`SYSCALL_DEFINE` wrappers) that open brackets and are often
/// repeated with identical arguments, each with the base name of its fentry program (a trampoline
/// program is loaded for one function; the kprobe program attaches to all of them). Each is hooked
/// where the kernel has it.
const SYSCALLS: [(&str, &str); 14] = [
    ("__x64_sys_madvise", "operation_madvise"),
    ("__x64_sys_process_madvise", "operation_process_madvise"),
    ("__x64_sys_munmap", "operation_munmap"),
    ("__x64_sys_mmap", "operation_mmap"),
    ("__x64_sys_brk", "operation_brk"),
    ("__x64_sys_mremap", "operation_mremap"),
    ("__x64_sys_mprotect", "operation_mprotect"),
    ("__x64_sys_pkey_mprotect", "operation_pkey_mprotect"),
    ("__x64_sys_clone", "operation_clone"),
    ("__x64_sys_clone3", "operation_clone3"),
    ("__x64_sys_fork", "operation_fork"),
    ("__x64_sys_migrate_pages", "operation_migrate_pages"),
    ("__x64_sys_move_pages", "operation_move_pages"),
    ("__x64_sys_mbind", "operation_mbind"),
];

/// One hook per entry point: its own fentry program, the shared kprobe program. Every process's system calls cross
/// them, and only a thread whose mm has notifier subscriptions can have an operation to end, so they are attached
/// only while some mm has subscriptions (`probes::arming`).
const HOOKS: [TracedHook; SYSCALLS.len()] = {
    let mut out = [TracedHook::entry("", ""); SYSCALLS.len()];
    let mut i = 0;
    while i < SYSCALLS.len() {
        let (target, fentry) = SYSCALLS[i];
        out[i] =
            TracedHook::entry(fentry, target).where_hookable().kprobe_program("operation_syscall").while_subscribed();
        i += 1;
    }
    out
};

/// The family's name, as `check`, `--probes.deny` and `probe_attached{probe}` show it.
pub const ID: FamilyId = FamilyId::new("overlapping_brackets");

pub static OVERLAPPING_BRACKETS: Family = Family {
    id: ID,
    description: "brackets overlapping an earlier bracket on the same mm within one system call or page fault",
    required: false,
    traced: Traced {
        needs: &[Need::SameModeAs(super::brackets::ID), Need::Function(SYSCALLS[0].0)],
        hooks: &HOOKS,
        kprobe_degraded: "",
    },
    fallbacks: &[],
};
