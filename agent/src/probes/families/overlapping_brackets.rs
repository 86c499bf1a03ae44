//! The overlapping-brackets family: operation boundaries for the bracket programs' overlap check
//! (`double_notifications_total{kind="overlapping_brackets"}`). It runs with the bracket family in
//! fentry or kprobe mode; each mode's alternative owns its copy of the boundary program.
//!
//! An operation is told apart from the next by the user registers of its kernel entry (system-call
//! number, ip, sp, arguments). That fails only for the same call repeated with the same registers,
//! so the system calls that routinely invalidate the same range again (a `madvise` loop, a pre-fork
//! server's `fork` loop) also end the operation at their entry. Hooking those few functions, rather
//! than the `sys_enter` tracepoint, leaves every other system call on the host on its fast path.

use crate::probes::spec::{Alternative, Family, FamilyId, Hook, Mode, Need, ProgramSpec};

/// x86-64 system-call entry points (`SYSCALL_DEFINE` wrappers) that open brackets and are often
/// repeated with identical arguments, each with its fentry program (a trampoline program is loaded
/// for one function; the kprobe program attaches to all of them). Each is hooked where the kernel has it.
const SYSCALLS: [(&str, &str); 14] = [
    ("__x64_sys_madvise", "operation_madvise_fentry"),
    ("__x64_sys_process_madvise", "operation_process_madvise_fentry"),
    ("__x64_sys_munmap", "operation_munmap_fentry"),
    ("__x64_sys_mmap", "operation_mmap_fentry"),
    ("__x64_sys_brk", "operation_brk_fentry"),
    ("__x64_sys_mremap", "operation_mremap_fentry"),
    ("__x64_sys_mprotect", "operation_mprotect_fentry"),
    ("__x64_sys_pkey_mprotect", "operation_pkey_mprotect_fentry"),
    ("__x64_sys_clone", "operation_clone_fentry"),
    ("__x64_sys_clone3", "operation_clone3_fentry"),
    ("__x64_sys_fork", "operation_fork_fentry"),
    ("__x64_sys_migrate_pages", "operation_migrate_pages_fentry"),
    ("__x64_sys_move_pages", "operation_move_pages_fentry"),
    ("__x64_sys_mbind", "operation_mbind_fentry"),
];

/// The specs of one mode: fentry programs one per entry point, the kprobe program on every one.
const fn specs(hook: Hook) -> [ProgramSpec; SYSCALLS.len()] {
    let mut out = [ProgramSpec { program: "", hook, target: "", when: None }; SYSCALLS.len()];
    let mut i = 0;
    while i < SYSCALLS.len() {
        let (target, fentry) = SYSCALLS[i];
        out[i].target = target;
        (out[i].program, out[i].when) = match hook {
            Hook::FEntry => (fentry, Some(Need::TrampolineArgs(target))),
            _ => ("operation_syscall_kprobe", Some(Need::Function(target))),
        };
        i += 1;
    }
    out
}

const FENTRY_PROGRAMS: [ProgramSpec; SYSCALLS.len()] = specs(Hook::FEntry);
const KPROBE_PROGRAMS: [ProgramSpec; SYSCALLS.len()] = specs(Hook::KProbe);

pub static OVERLAPPING_BRACKETS: Family = Family {
    id: FamilyId::OverlappingBrackets,
    description: "brackets overlapping an earlier bracket on the same mm within one system call or page fault",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[Need::SameModeAs(FamilyId::Brackets), Need::Function(SYSCALLS[0].0)],
            programs: &FENTRY_PROGRAMS,
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[Need::SameModeAs(FamilyId::Brackets), Need::Function(SYSCALLS[0].0)],
            programs: &KPROBE_PROGRAMS,
            degraded: "",
        },
    ],
};
