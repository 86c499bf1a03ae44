//! The declarative probe table: each family lists its attach alternatives in order of
//! preference (fentry/fexit → kprobe/kretprobe → tracepoint) and what each needs from the
//! kernel. Adding a family or an alternative is a matter of adding rows here.

use super::{causes, intervals, overlaps};
use crate::kernel::FieldGroup;

/// How an alternative attaches, as shown in `check` and in `probe_attached{mode}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Fentry,
    Kprobe,
    /// BTF-typed (`tp_btf`) or classic tracepoints.
    Tracepoint,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fentry => "fentry",
            Mode::Kprobe => "kprobe",
            Mode::Tracepoint => "tracepoint",
        }
    }
}

/// The program type of one hook (named as in `check --json`'s `hooks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    #[serde(rename = "fentry")]
    FEntry,
    #[serde(rename = "fexit")]
    FExit,
    #[serde(rename = "kprobe")]
    KProbe,
    #[serde(rename = "kretprobe")]
    KRetProbe,
    /// `tp_btf/<name>`; target is the tracepoint name.
    TpBtf,
    /// classic tracepoint; target is `group:name`.
    Tracepoint,
    /// BPF iterator (`iter/<target>`), loaded only: the agent creates a link per run.
    Iter,
}

/// One program of an alternative and what it attaches to.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ProgramSpec {
    /// Program (function) name in the eBPF object.
    pub program: &'static str,
    pub hook: Hook,
    /// Function, tracepoint name, or `group:name`; `a|b` means the first of them the kernel has.
    pub target: &'static str,
    /// Attach only where this holds (a hook that exists on one kernel generation only).
    pub when: Option<Need>,
}

/// A kernel feature an alternative depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "what")]
pub enum Need {
    /// A BTF FUNC with exactly one plain-named text symbol in kallsyms.
    Function(&'static str),
    /// A function whose BTF prototype has this many parameters.
    Arity(&'static str, usize),
    /// Struct fields resolved from BTF.
    Fields(FieldGroup),
    /// The kernel accepts fentry/fexit programs (probed by loading one).
    Trampolines,
    /// kprobes are available.
    Kprobes,
    /// `btf_trace_<name>` in vmlinux BTF (a built-in tracepoint with BTF args).
    BtfTracepoint(&'static str),
    /// tracefs has `events/<group>/<name>`.
    TracefsEvent(&'static str, &'static str),
    /// The function can carry a trampoline: at most six arguments, or more where the kernel
    /// accepted a trampoline on a wider function (probed at start-up).
    TrampolineArgs(&'static str),
    /// The named family (attached earlier) runs in this alternative's mode: its programs keep
    /// the per-thread state this one reads.
    SameModeAs(&'static str),
}

#[derive(Debug, serde::Serialize)]
pub struct Alternative {
    /// Short label, e.g. `fentry`, `kprobe`, `tp_btf`, `tracepoint`.
    pub name: &'static str,
    pub mode: Mode,
    pub needs: &'static [Need],
    pub programs: &'static [ProgramSpec],
    /// What this alternative cannot report compared with the best one.
    pub degraded: &'static str,
}

#[derive(Debug, serde::Serialize)]
pub struct Family {
    pub name: &'static str,
    pub description: &'static str,
    /// `check --strict` fails when a required family attaches nothing.
    pub required: bool,
    pub alternatives: &'static [Alternative],
}

const START: &str = "__mmu_notifier_invalidate_range_start";
const END: &str = "__mmu_notifier_invalidate_range_end";

/// Every probe family, in attach order.
pub static FAMILIES: &[&Family] = &[
    &BRACKETS,
    &SECONDARY_TLB,
    &overlaps::OVERLAPPING_BRACKETS,
    &FORK_COPIES,
    &causes::CAUSES,
    &intervals::INTERVAL_NOTIFIERS,
    &super::table_subscribers::SUBSCRIBERS,
];

static BRACKETS: Family = Family {
    name: "brackets",
    description: "invalidate_range_start → _end brackets per owner memory cgroup and event, with latency",
    required: true,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::Function(START),
                Need::Function(END),
                Need::Arity(START, 1),
                Need::Fields(FieldGroup::NotifierRange),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "bracket_start_fentry", hook: Hook::FEntry, target: START, when: None },
                ProgramSpec { program: "bracket_start_fexit", hook: Hook::FExit, target: START, when: None },
                ProgramSpec { program: "bracket_end_fexit", hook: Hook::FExit, target: END, when: None },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::Function(START),
                Need::Function(END),
                Need::Fields(FieldGroup::NotifierRange),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "bracket_start_kprobe", hook: Hook::KProbe, target: START, when: None },
                ProgramSpec { program: "bracket_start_kretprobe", hook: Hook::KRetProbe, target: START, when: None },
                ProgramSpec { program: "bracket_end_kprobe", hook: Hook::KProbe, target: END, when: None },
                ProgramSpec { program: "bracket_end_kretprobe", hook: Hook::KRetProbe, target: END, when: None },
            ],
            degraded: "higher per-event cost",
        },
        Alternative {
            name: "tp_btf",
            mode: Mode::Tracepoint,
            needs: &[Need::BtfTracepoint("kvm_unmap_hva_range"), Need::Fields(FieldGroup::TaskCgroup)],
            programs: &[ProgramSpec {
                program: "kvm_unmap_tp_btf",
                hook: Hook::TpBtf,
                target: "kvm_unmap_hva_range",
                when: None,
            }],
            degraded: "KVM subscribers only, one count per VM per bracket, current task's cgroup, no event type, no latency",
        },
        Alternative {
            name: "tracepoint",
            mode: Mode::Tracepoint,
            needs: &[Need::TracefsEvent("kvm", "kvm_unmap_hva_range"), Need::Fields(FieldGroup::TaskCgroup)],
            programs: &[tp("kvm_unmap_tracepoint", "kvm:kvm_unmap_hva_range")],
            degraded: "KVM subscribers only, one count per VM per bracket, current task's cgroup, no event type, no latency",
        },
    ],
};

/// The secondary-TLB entry point: 6.6+ name first, the pre-6.6 one otherwise (same arguments).
const SECONDARY: &str = "__mmu_notifier_arch_invalidate_secondary_tlbs|__mmu_notifier_invalidate_range";
const GATHER: &str = "tlb_gather_mmu";
const GATHER_END: &str = "tlb_finish_mmu";
/// Pre-6.6 only: `_end(range, only_end)` tells whether `_end` repeats `->invalidate_range`.
const ONLY_END: Option<Need> = Some(Need::Arity(END, 2));

static SECONDARY_TLB: Family = Family {
    name: "secondary_tlb",
    description: "secondary-TLB invalidations by scope and context, and double notifications",
    required: false,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::SameModeAs("brackets"),
                Need::Function(SECONDARY),
                Need::Function(GATHER),
                Need::Function(GATHER_END),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "secondary_fentry", hook: Hook::FEntry, target: SECONDARY, when: None },
                ProgramSpec { program: "secondary_end_fentry", hook: Hook::FEntry, target: END, when: ONLY_END },
                ProgramSpec { program: "gather_open_fentry", hook: Hook::FEntry, target: GATHER, when: None },
                ProgramSpec { program: "gather_close_fexit", hook: Hook::FExit, target: GATHER_END, when: None },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::SameModeAs("brackets"),
                Need::Function(SECONDARY),
                Need::Function(GATHER),
                Need::Function(GATHER_END),
                Need::Fields(FieldGroup::NotifierOps),
                Need::Fields(FieldGroup::MmOwner),
                Need::Fields(FieldGroup::TaskCgroup),
            ],
            programs: &[
                ProgramSpec { program: "secondary_kprobe", hook: Hook::KProbe, target: SECONDARY, when: None },
                ProgramSpec { program: "secondary_end_kprobe", hook: Hook::KProbe, target: END, when: ONLY_END },
                ProgramSpec { program: "gather_open_kprobe", hook: Hook::KProbe, target: GATHER, when: None },
                ProgramSpec {
                    program: "gather_close_kretprobe",
                    hook: Hook::KRetProbe,
                    target: GATHER_END,
                    when: None,
                },
            ],
            degraded: "higher per-event cost",
        },
    ],
};

/// The fork window: `dup_mmap` (out of line on most builds), else its caller `copy_process`.
const DUP_MMAP: &str = "dup_mmap|copy_process";
/// The anon-rmap call of each eager fork copy: folio API from 6.3, page API before.
const COPY_MARKER: &str = "folio_add_new_anon_rmap|page_add_new_anon_rmap";
const SPLIT: &str = "__split_huge_pmd";
const fn tp(program: &'static str, target: &'static str) -> ProgramSpec {
    ProgramSpec { program, hook: Hook::Tracepoint, target, when: None }
}

static FORK_COPIES: Family = Family {
    name: "fork_copies",
    description: "pages copied eagerly at fork() because they may be DMA-pinned, and THPs split for it, per parent cgroup",
    required: true,
    alternatives: &[
        Alternative {
            name: "fentry",
            mode: Mode::Fentry,
            needs: &[
                Need::Trampolines,
                Need::Function(DUP_MMAP),
                Need::Function(COPY_MARKER),
                Need::Function(SPLIT),
                Need::Fields(FieldGroup::TaskCgroup),
                Need::Fields(FieldGroup::VmaMm),
            ],
            programs: &[
                ProgramSpec { program: "fork_window_fentry", hook: Hook::FEntry, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_window_fexit", hook: Hook::FExit, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_copy_fentry", hook: Hook::FEntry, target: COPY_MARKER, when: None },
                ProgramSpec { program: "fork_split_fentry", hook: Hook::FEntry, target: SPLIT, when: None },
            ],
            degraded: "",
        },
        Alternative {
            name: "kprobe",
            mode: Mode::Kprobe,
            needs: &[
                Need::Kprobes,
                Need::Function(DUP_MMAP),
                Need::Function(COPY_MARKER),
                Need::Function(SPLIT),
                Need::Fields(FieldGroup::TaskCgroup),
                Need::Fields(FieldGroup::VmaMm),
            ],
            programs: &[
                ProgramSpec { program: "fork_window_kprobe", hook: Hook::KProbe, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_window_kretprobe", hook: Hook::KRetProbe, target: DUP_MMAP, when: None },
                ProgramSpec { program: "fork_copy_kprobe", hook: Hook::KProbe, target: COPY_MARKER, when: None },
                ProgramSpec { program: "fork_split_kprobe", hook: Hook::KProbe, target: SPLIT, when: None },
            ],
            degraded: "higher per-event cost",
        },
        Alternative {
            name: "tp_btf",
            mode: Mode::Tracepoint,
            needs: &[
                Need::BtfTracepoint("mm_page_alloc"),
                Need::BtfTracepoint("task_newtask"),
                Need::Fields(FieldGroup::TaskCgroup),
                Need::Fields(FieldGroup::GfpMask),
                Need::Fields(FieldGroup::CauseContext),
            ],
            programs: &[
                ProgramSpec { program: "fork_page_alloc", hook: Hook::TpBtf, target: "mm_page_alloc", when: None },
                ProgramSpec { program: "fork_newtask_close", hook: Hook::TpBtf, target: "task_newtask", when: None },
            ],
            degraded: "no THP split count; copies counted by their order-0 GFP_HIGHUSER_MOVABLE allocation by the parent in the clone system call; forking task's cgroup",
        },
    ],
};

/// The do-nothing fentry program used to probe for trampoline support, and the functions
/// it is loaded against (the first one present in BTF).
pub const FENTRY_PROBE_PROGRAM: &str = "probe_fentry";
pub const FENTRY_PROBE_TARGETS: &[&str] = &[START, "do_nanosleep", "vfs_read"];
/// Functions with more than six arguments on common kernels, to probe for wide trampolines.
pub const WIDE_PROBE_TARGETS: &[&str] = &["migrate_pages", "copy_huge_pmd", "copy_huge_pud"];

/// Every function the planner may look up in kallsyms (fentry and kprobe targets, `Function` and `TrampolineArgs`
/// needs, each name of an `a|b` list), so that only these are read from it.
pub fn kallsyms_functions() -> Vec<&'static str> {
    let mut names = Vec::new();
    for alt in FAMILIES.iter().flat_map(|f| f.alternatives) {
        let whens = alt.programs.iter().filter_map(|p| p.when.as_ref());
        for need in alt.needs.iter().chain(whens) {
            if let Need::Function(n) | Need::TrampolineArgs(n) = need {
                names.extend(n.split('|'));
            }
        }
        for p in alt.programs {
            if matches!(p.hook, Hook::FEntry | Hook::FExit | Hook::KProbe | Hook::KRetProbe) {
                names.extend(p.target.split('|'));
            }
        }
    }
    names.sort_unstable();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternatives_are_ordered_by_preference_and_programs_are_unique() {
        let rank = |m: Mode| match m {
            Mode::Fentry => 0,
            Mode::Kprobe => 1,
            Mode::Tracepoint => 2,
        };
        let mut seen = std::collections::HashSet::new();
        for f in FAMILIES {
            assert!(f.alternatives.windows(2).all(|w| rank(w[0].mode) <= rank(w[1].mode)), "{}", f.name);
            for a in f.alternatives {
                assert!(!a.programs.is_empty());
                // A program may attach to several targets within one alternative, never in two.
                let mine: std::collections::HashSet<_> = a.programs.iter().map(|p| p.program).collect();
                for p in mine {
                    assert!(seen.insert(p), "program {p} used by two alternatives");
                }
            }
        }
    }
}
