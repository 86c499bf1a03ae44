//! The overlapping-brackets family: operation boundaries (system-call entry, user page fault)
//! for the bracket programs' overlap check (`double_notifications_total{kind="overlapping_brackets"}`).
//! It runs with the bracket family in fentry or kprobe mode; each mode's alternative owns its
//! copy of the two tracepoint programs.

use super::table::{Alternative, Family, Hook, Mode, Need, ProgramSpec};

const SYS_ENTER: &str = "sys_enter";
/// x86 only; elsewhere the system-call boundary alone splits operations.
const USER_FAULT: &str = "page_fault_user";

pub static OVERLAPPING_BRACKETS: Family = Family {
    name: "overlapping_brackets",
    description: "brackets overlapping an earlier bracket on the same mm within one system call or page fault",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[Need::SameModeAs("brackets"), Need::BtfTracepoint(SYS_ENTER)],
            programs: &[
                ProgramSpec { program: "operation_sys_enter_fentry", hook: Hook::TpBtf, target: SYS_ENTER, when: None },
                ProgramSpec {
                    program: "operation_fault_fentry",
                    hook: Hook::TpBtf,
                    target: USER_FAULT,
                    when: Some(Need::BtfTracepoint(USER_FAULT)),
                },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[Need::SameModeAs("brackets"), Need::BtfTracepoint(SYS_ENTER)],
            programs: &[
                ProgramSpec { program: "operation_sys_enter_kprobe", hook: Hook::TpBtf, target: SYS_ENTER, when: None },
                ProgramSpec {
                    program: "operation_fault_kprobe",
                    hook: Hook::TpBtf,
                    target: USER_FAULT,
                    when: Some(Need::BtfTracepoint(USER_FAULT)),
                },
            ],
            degraded: "",
        },
    ],
};
