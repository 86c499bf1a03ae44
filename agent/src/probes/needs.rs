//! Evaluates a [`Need`] against the running kernel: `Ok` or the reason it is not met.

use super::spec::{FamilyId, Mode, Need};
use crate::kernel::{KernelInfo, caps};

/// Facts gathered by trying things, which the kernel description alone cannot tell.
pub struct Probed {
    /// Whether a trivial fentry program loaded.
    pub trampolines: Result<(), String>,
    /// Whether it also loaded on a function with more than six arguments.
    pub wide_trampolines: Result<(), String>,
    /// Whether a detached fentry program attaches again by its fd (`attach::probe_reattach`; 5.10 refuses), which
    /// the on-demand hooks of fentry mode need (`attach::not_on_demand`).
    pub reattach: Result<(), String>,
    /// `--probes.keep-attached`: hooks that cannot be attached on demand are attached for good instead of being off.
    pub keep_attached: bool,
    /// Families attached so far, with their mode.
    pub attached: Vec<(FamilyId, Mode)>,
    /// The flags of the families off by default that the operator switched on (`Need::OptIn`).
    pub opted_in: Vec<&'static str>,
}

/// Checks `need` for an alternative of `mode`.
pub fn check(need: &Need, mode: Mode, kernel: &KernelInfo, probed: &Probed) -> Result<(), String> {
    match *need {
        Need::SameModeAs(family) => match probed.attached.iter().find(|(f, _)| *f == family) {
            Some((_, m)) if *m == mode => Ok(()),
            Some((_, m)) => Err(format!("{family} is attached in {} mode, not {}", m.as_str(), mode.as_str())),
            None => Err(format!("{family} is not attached")),
        },
        Need::OptIn(flag) if probed.opted_in.contains(&flag) => Ok(()),
        Need::OptIn(flag) => Err(format!("off by default ({flag} switches it on)")),
        Need::ModeAvailable => match mode {
            Mode::Fentry => probed.trampolines.clone(),
            Mode::Kprobe => kernel.kprobes.clone(),
            Mode::Tracepoint => Ok(()), // each tracepoint is a need of its own
        },
        Need::Hookable(names) if mode == Mode::Fentry => {
            let name = resolve_function(kernel, names)?;
            match kernel.btf.function(name).map_err(|e| e.to_string())? {
                Some(p) if p.params.len() <= 6 => Ok(()),
                Some(p) => probed.wide_trampolines.clone().map_err(|why| {
                    format!("{name} takes {} arguments and this kernel's trampolines take six: {why}", p.params.len())
                }),
                None => Err(format!("{name} is not in BTF")),
            }
        }
        Need::Hookable(names) | Need::Function(names) => resolve_function(kernel, names).map(|_| ()),
        Need::FexitArity(..) if mode != Mode::Fentry => Ok(()),
        Need::Arity(name, n) | Need::FexitArity(name, n) => {
            match kernel.btf.function(name).map_err(|e| e.to_string())? {
                Some(p) if p.params.len() == n => Ok(()),
                Some(p) => Err(format!("{name} takes {} arguments in BTF, expected {n}", p.params.len())),
                None => Err(format!("{name} is not in BTF")),
            }
        }
        Need::Fields(group) => kernel.layout.group(group),
        Need::BtfTracepoint(name) => {
            if kernel.btf.has_type(&format!("btf_trace_{name}")) {
                Ok(())
            } else {
                Err(format!("no btf_trace_{name} in vmlinux BTF (tracepoint in a module or absent)"))
            }
        }
        Need::TracefsEvent(group, name) if kernel.deny.tracepoint(group, name) => {
            Err(format!("tracepoint {group}:{name} denied by --probes.deny"))
        }
        Need::TracefsEvent(group, name) => caps::tracepoint(group, name),
    }
}

/// The first of `a|b|…` that [`function`] accepts; all reasons when none does.
pub fn resolve_function(kernel: &KernelInfo, names: &'static str) -> Result<&'static str, String> {
    let mut reasons = Vec::new();
    for name in names.split('|') {
        match function(kernel, name) {
            Ok(()) => return Ok(name),
            Err(why) => reasons.push(why),
        }
    }
    Err(reasons.join("; "))
}

/// fentry and kprobes attach by name: the function must be in BTF and be exactly one plain
/// text symbol (not inlined, not only `.isra`/`.constprop` clones, not a static duplicate).
fn function(kernel: &KernelInfo, name: &str) -> Result<(), String> {
    if kernel.btf.function(name).map_err(|e| e.to_string())?.is_none() {
        return Err(format!("{name} is not a function in BTF"));
    }
    if kernel.kallsyms.is_empty() {
        return Ok(()); // kallsyms unreadable: the attach attempt will tell
    }
    match kernel.kallsyms.text_count(name) {
        1 => Ok(()),
        0 => Err(format!("{name} has no plain text symbol in kallsyms (inlined or only compiler clones)")),
        n => Err(format!("{n} text symbols are named {name}: ambiguous")),
    }
}
