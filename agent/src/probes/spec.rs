//! The vocabulary of the probe table ([`super::families`]): a family, its attach alternatives in order of preference
//! (fentry/fexit → kprobe/kretprobe → tracepoint), their programs and what each needs from the kernel.

use crate::kernel::FieldGroup;

/// Which probe family: code that asks whether a family attached names it by this, never by a string. Serialized
/// (and shown) as [`FamilyId::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FamilyId {
    Brackets,
    SecondaryTlb,
    OverlappingBrackets,
    ForkCopies,
    Causes,
    IntervalNotifiers,
    Subscribers,
    /// The subscriber-callback timers, attached outside the table (`crate::subscribers::callbacks`).
    SubscriberCallbacks,
}

impl FamilyId {
    /// As in `check`, `--probes.deny` and `probe_attached{probe}`.
    pub const fn name(self) -> &'static str {
        match self {
            FamilyId::Brackets => "brackets",
            FamilyId::SecondaryTlb => "secondary_tlb",
            FamilyId::OverlappingBrackets => "overlapping_brackets",
            FamilyId::ForkCopies => "fork_copies",
            FamilyId::Causes => "causes",
            FamilyId::IntervalNotifiers => "interval_notifiers",
            FamilyId::Subscribers => "subscribers",
            FamilyId::SubscriberCallbacks => "subscriber_callbacks",
        }
    }
}

impl std::fmt::Display for FamilyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for FamilyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

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
    SameModeAs(FamilyId),
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
    #[serde(rename = "name")]
    pub id: FamilyId,
    pub description: &'static str,
    /// `check --strict` fails when a required family attaches nothing.
    pub required: bool,
    pub alternatives: &'static [Alternative],
}
