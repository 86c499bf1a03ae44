//! The vocabulary of the probe table ([`super::families`]): a family, its attach alternatives in order of preference
//! (fentry/fexit → kprobe/kretprobe → tracepoint), their programs and what each needs from the kernel.

use crate::kernel::FieldGroup;

/// Which probe family, by its name (what `check`, `--probes.deny` and `probe_attached{probe}` show). Each family
/// declares its own beside its row (`families::<family>::ID`); code that asks whether a family attached compares
/// with that constant, never with a string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FamilyId(&'static str);

impl FamilyId {
    pub const fn new(name: &'static str) -> Self {
        Self(name)
    }

    pub const fn name(self) -> &'static str {
        self.0
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

/// The name of a program in the eBPF object: a base and, for the programs of a fentry/kprobe pair, the suffix of its
/// hook (`bracket_start` + `_kretprobe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProgramName {
    base: &'static str,
    suffix: &'static str,
}

impl ProgramName {
    pub const fn new(name: &'static str) -> Self {
        Self { base: name, suffix: "" }
    }
}

impl std::fmt::Display for ProgramName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.base, self.suffix)
    }
}

/// One program of an alternative and what it attaches to.
#[derive(Clone, Copy, Debug)]
pub struct ProgramSpec {
    /// Program (function) name in the eBPF object.
    pub program: ProgramName,
    pub hook: Hook,
    /// Function, tracepoint name, or `group:name`; `a|b` means the first of them the kernel has.
    pub target: &'static str,
    /// Attach only where this holds (a hook that exists on one kernel generation only).
    pub when: Option<Need>,
    /// Whether the hook is attached all the time or only while the inventory sees something it can count.
    pub on_demand: OnDemand,
}

/// When a hook is attached (`probes::arming`): a hot-path hook that only some mms can make count is attached only
/// while the subscriber inventory sees such an mm, unless the agent keeps its group attached for good.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDemand {
    /// Attached all the time.
    Always,
    /// While some mm has the has-pinned flag: the fork-copy family's per-copy hook.
    WhilePinned,
    /// While some mm has notifier subscriptions (classic or interval): operation boundaries, TLB-gather and cause
    /// windows, which only matter around brackets, and brackets only run for such mms.
    WhileSubscribed,
}

impl OnDemand {
    /// The groups of hooks attached on demand, each switched as one.
    pub const GROUPS: [OnDemand; 2] = [OnDemand::WhilePinned, OnDemand::WhileSubscribed];

    /// The group's name in logs, the API and `/metrics` (`group` label).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::WhilePinned => "fork_copy",
            Self::WhileSubscribed => "subscriptions",
        }
    }

    /// What the group's hooks are, for log lines ("... attached").
    pub const fn hooks(self) -> &'static str {
        match self {
            Self::Always => "hooks",
            Self::WhilePinned => "fork-copy hook",
            Self::WhileSubscribed => "subscription hooks (operation boundaries, TLB-gather and cause windows)",
        }
    }

    /// What the group waits for, for log lines ("no process has ...").
    pub const fn condition(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::WhilePinned => "pinned pages",
            Self::WhileSubscribed => "notifier subscriptions",
        }
    }
}

impl ProgramSpec {
    /// A program of a tracepoint alternative, attached wherever the alternative is.
    pub const fn new(program: &'static str, hook: Hook, target: &'static str) -> Self {
        Self { program: ProgramName::new(program), hook, target, when: None, on_demand: OnDemand::Always }
    }

    pub const fn when(self, need: Need) -> Self {
        Self { when: Some(need), ..self }
    }

    /// Attached only while some mm has the has-pinned flag ([`OnDemand::WhilePinned`]).
    pub const fn while_pinned(self) -> Self {
        Self { on_demand: OnDemand::WhilePinned, ..self }
    }
}

/// A kernel feature an alternative depends on. The first three are read in the alternative's mode, so that the
/// fentry and kprobe alternatives of a family share one list ([`Traced::needs`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// The alternative's mode works on this kernel: fentry/fexit programs load (probed by loading one), or kprobes
    /// are available.
    ModeAvailable,
    /// The function can be hooked in the alternative's mode: as [`Need::Function`], and for fentry at most six
    /// arguments, or more where the kernel accepted a trampoline on a wider function (probed at start-up).
    Hookable(&'static str),
    /// fexit programs read the return value after this many arguments: in fentry mode, as [`Need::Arity`]; a
    /// kretprobe reads it from its register whatever the arity.
    FexitArity(&'static str, usize),
    /// A BTF FUNC with exactly one plain-named text symbol in kallsyms.
    Function(&'static str),
    /// A function whose BTF prototype has this many parameters.
    Arity(&'static str, usize),
    /// Struct fields resolved from BTF.
    Fields(FieldGroup),
    /// `btf_trace_<name>` in vmlinux BTF (a built-in tracepoint with BTF args).
    BtfTracepoint(&'static str),
    /// tracefs has `events/<group>/<name>`.
    TracefsEvent(&'static str, &'static str),
    /// The named family (attached earlier) runs in this alternative's mode: its programs keep
    /// the per-thread state this one reads.
    SameModeAs(FamilyId),
    /// Off unless the operator gave this flag (e.g. `--probes.ksm-cow`): a family whose price is paid host-wide. Not
    /// a kernel feature: without the flag the family is reported `off`, and `probe_attached` has no series for it.
    OptIn(&'static str),
}

/// How the programs of one [`TracedHook`] attach in each mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookKind {
    /// At entry: fentry, or kprobe.
    Entry,
    /// At return: fexit, or kretprobe.
    Exit,
    /// At entry and at return: fentry and fexit, or kprobe and kretprobe.
    EntryAndExit,
    /// At return, reading the arguments: fexit sees them, a kretprobe does not, so kprobe mode keeps them with a
    /// kprobe at entry: fexit, or kprobe and kretprobe.
    ExitWithArgs,
    /// A program of another type that each mode has its own copy of (it shares the mode's per-thread state or
    /// maps), named `<base>_fentry` and `<base>_kprobe`.
    ModeCopy(Hook),
}

/// One function a family hooks in fentry and in kprobe mode, written once for both: what it attaches to, when, and
/// how. The programs are named `<base>` + the suffix of their hook (`_fentry`, `_fexit`, `_kprobe`, `_kretprobe`).
#[derive(Clone, Copy, Debug)]
pub struct TracedHook {
    base: &'static str,
    /// The base of the kprobe-mode programs, where one kprobe program serves several functions.
    kprobe_base: &'static str,
    pub target: &'static str,
    pub kind: HookKind,
    /// Attach only where this holds, in either mode.
    pub when: Option<Need>,
    /// See [`ProgramSpec::on_demand`].
    pub on_demand: OnDemand,
}

impl TracedHook {
    const fn new(base: &'static str, kind: HookKind, target: &'static str) -> Self {
        Self { base, kprobe_base: base, target, kind, when: None, on_demand: OnDemand::Always }
    }

    /// Attached only while some mm has the has-pinned flag ([`OnDemand::WhilePinned`]).
    pub const fn while_pinned(self) -> Self {
        Self { on_demand: OnDemand::WhilePinned, ..self }
    }

    /// Attached only while some mm has notifier subscriptions ([`OnDemand::WhileSubscribed`]).
    pub const fn while_subscribed(self) -> Self {
        Self { on_demand: OnDemand::WhileSubscribed, ..self }
    }

    pub const fn entry(base: &'static str, target: &'static str) -> Self {
        Self::new(base, HookKind::Entry, target)
    }

    pub const fn exit(base: &'static str, target: &'static str) -> Self {
        Self::new(base, HookKind::Exit, target)
    }

    pub const fn entry_and_exit(base: &'static str, target: &'static str) -> Self {
        Self::new(base, HookKind::EntryAndExit, target)
    }

    pub const fn exit_with_args(base: &'static str, target: &'static str) -> Self {
        Self::new(base, HookKind::ExitWithArgs, target)
    }

    pub const fn mode_copy(base: &'static str, hook: Hook, target: &'static str) -> Self {
        Self::new(base, HookKind::ModeCopy(hook), target)
    }

    pub const fn when(self, need: Need) -> Self {
        Self { when: Some(need), ..self }
    }

    /// Attached only where the target can be hooked in the mode (a caller missing on some kernels).
    pub const fn where_hookable(self) -> Self {
        self.when(Need::Hookable(self.target))
    }

    /// In kprobe mode, the program `<base>_kprobe` attaches to this target (and the other targets that name it).
    pub const fn kprobe_program(self, base: &'static str) -> Self {
        Self { kprobe_base: base, ..self }
    }

    /// The programs of this hook in `mode` (fentry or kprobe), in attach order.
    fn programs(&self, mode: Mode) -> Vec<ProgramSpec> {
        let (base, entry, exit) = match mode {
            Mode::Fentry => (self.base, (Hook::FEntry, "_fentry"), (Hook::FExit, "_fexit")),
            _ => (self.kprobe_base, (Hook::KProbe, "_kprobe"), (Hook::KRetProbe, "_kretprobe")),
        };
        let hooks = match self.kind {
            HookKind::Entry => vec![entry],
            HookKind::Exit => vec![exit],
            HookKind::EntryAndExit => vec![entry, exit],
            HookKind::ExitWithArgs if mode == Mode::Fentry => vec![exit],
            HookKind::ExitWithArgs => vec![entry, exit],
            HookKind::ModeCopy(hook) => vec![(hook, entry.1)],
        };
        let spec = |(hook, suffix)| ProgramSpec {
            program: ProgramName { base, suffix },
            hook,
            target: self.target,
            when: self.when,
            on_demand: self.on_demand,
        };
        hooks.into_iter().map(spec).collect()
    }
}

/// A family's fentry/fexit and kprobe/kretprobe alternatives, written once: the needs of both and the hooks.
#[derive(Debug)]
pub struct Traced {
    /// Needs of both alternatives, each read in the alternative's mode.
    pub needs: &'static [Need],
    pub hooks: &'static [TracedHook],
    /// What the kprobe alternative cannot report compared with fentry.
    pub kprobe_degraded: &'static str,
}

/// An alternative after the fentry/kprobe pair: tracepoints (`tp_btf` or classic), or an iterator alone.
#[derive(Debug)]
pub struct Fallback {
    /// Short label, e.g. `tp_btf`, `tracepoint`.
    pub name: &'static str,
    pub needs: &'static [Need],
    pub programs: &'static [ProgramSpec],
    /// What this alternative cannot report compared with the best one.
    pub degraded: &'static str,
}

/// One attach alternative of a family as the planner tries it, derived from the table by [`Family::alternatives`].
#[derive(Debug)]
pub struct Alternative {
    /// Short label, e.g. `fentry`, `kprobe`, `tp_btf`, `tracepoint`.
    pub name: &'static str,
    pub mode: Mode,
    pub needs: &'static [Need],
    pub programs: Vec<ProgramSpec>,
    /// What this alternative cannot report compared with the best one.
    pub degraded: &'static str,
}

#[derive(Debug)]
pub struct Family {
    pub id: FamilyId,
    pub description: &'static str,
    /// `check --strict` fails when a required family attaches nothing.
    pub required: bool,
    /// The fentry and kprobe alternatives, the first two tried.
    pub traced: Traced,
    /// The alternatives tried after those, in order of preference (all in tracepoint mode).
    pub fallbacks: &'static [Fallback],
}

impl Family {
    /// Every alternative in order of preference: fentry/fexit, kprobe/kretprobe (both from [`Family::traced`]),
    /// then the fallbacks.
    pub fn alternatives(&self) -> Vec<Alternative> {
        let traced =
            [(Mode::Fentry, ""), (Mode::Kprobe, self.traced.kprobe_degraded)].map(|(mode, degraded)| Alternative {
                name: mode.as_str(),
                mode,
                needs: self.traced.needs,
                programs: self.traced.hooks.iter().flat_map(|h| h.programs(mode)).collect(),
                degraded,
            });
        let fallbacks = self.fallbacks.iter().map(|f| Alternative {
            name: f.name,
            mode: Mode::Tracepoint,
            needs: f.needs,
            programs: f.programs.to_vec(),
            degraded: f.degraded,
        });
        traced.into_iter().chain(fallbacks).collect()
    }
}
