//! Loads the eBPF object and attaches, per family, the first alternative whose needs are met
//! and which actually loads ("loose attachment": a failure disables that alternative only).

use aya::{
    Btf, Ebpf,
    programs::{BtfTracePoint, FEntry, FExit, Iter, KProbe, TracePoint},
};

use super::{
    arming::Collected,
    families,
    needs::{self, Probed},
    report::{AlternativeReport, FamilyReport, HookReport, Status},
    spec::{Alternative, Hook, Mode, Need, OnDemand, ProgramSpec},
};
use crate::kernel::KernelInfo;

/// Loads the trivial fentry program against the first available target, then unloads it.
pub fn probe_trampolines(ebpf: &mut Ebpf, btf: &Btf, kernel: &KernelInfo) -> Result<(), String> {
    let target = families::FENTRY_PROBE_TARGETS
        .iter()
        .find(|f| kernel.btf.function(f).ok().flatten().is_some())
        .ok_or("none of the fentry probe targets is in BTF")?;
    let prog: &mut FEntry = program(ebpf, families::FENTRY_PROBE_PROGRAM)?.try_into().map_err(|e| format!("{e}"))?;
    let result = prog.load(target, btf).map_err(|e| {
        let msg = error_chain(&e);
        if msg.contains("Operation not permitted") {
            format!("this kernel refuses fentry/fexit programs (EPERM loading a trivial one on {target}): {msg}")
        } else {
            format!("loading a trivial fentry program on {target} failed: {msg}")
        }
    });
    let _ = prog.unload();
    result
}

/// Attaches the trivial fentry program to a function with more than six arguments (x86
/// trampolines took at most six before 6.5), then unloads it.
pub fn probe_wide_trampolines(ebpf: &mut Ebpf, btf: &Btf, kernel: &KernelInfo) -> Result<(), String> {
    let wide = |f: &&&str| kernel.btf.function(f).ok().flatten().is_some_and(|p| p.params.len() > 6);
    let target =
        families::WIDE_PROBE_TARGETS.iter().find(wide).ok_or("no function with more than six arguments to probe")?;
    let prog: &mut FEntry = program(ebpf, families::FENTRY_PROBE_PROGRAM)?.try_into().map_err(|e| format!("{e}"))?;
    // The verifier accepts up to 12 arguments; the trampoline itself is built at attach time.
    let result = prog
        .load(target, btf)
        .and_then(|()| prog.attach().map(drop))
        .map_err(|e| format!("a trampoline on {target} did not attach: {}", error_chain(&e)));
    let _ = prog.unload();
    result
}

/// Whether a loaded fentry program attaches again by its fd after its link was closed (5.10 refuses: its target
/// trampoline is given up at the first attach), tried on the trivial program, then unloaded. The on-demand hooks
/// ([`super::arming`]) of fentry mode stay attached for good where it fails.
pub fn probe_reattach(ebpf: &mut Ebpf, btf: &Btf, kernel: &KernelInfo) -> Result<(), String> {
    let target = families::FENTRY_PROBE_TARGETS
        .iter()
        .find(|f| kernel.btf.function(f).ok().flatten().is_some())
        .ok_or("none of the fentry probe targets is in BTF")?;
    let prog: &mut FEntry = program(ebpf, families::FENTRY_PROBE_PROGRAM)?.try_into().map_err(|e| format!("{e}"))?;
    let result = prog.load(target, btf).map_err(|e| error_chain(&e)).and_then(|()| {
        let fd = prog.fd().map_err(|e| error_chain(&e))?;
        super::arming::attach_twice(fd).map_err(|e| format!("attaching {target}'s trivial program again: {e}"))
    });
    let _ = prog.unload();
    result
}

/// Attaches every family per the table, honouring a forced `mode`.
pub fn attach_families(
    ebpf: &mut Ebpf,
    btf: &Btf,
    kernel: &KernelInfo,
    probed: &mut Probed,
    forced: Option<Mode>,
    on_demand: &mut Collected,
) -> Vec<FamilyReport> {
    families::FAMILIES
        .iter()
        .map(|family| {
            let mut attached = false;
            let alternatives = family
                .alternatives()
                .iter()
                .map(|alt| {
                    let (status, reason) = if attached {
                        (Status::NotTried, "a preferred alternative is attached".to_string())
                    } else if let Some(why) = switched_off(alt, kernel, probed) {
                        (Status::Off, why)
                    } else if forced.is_some_and(|m| m != alt.mode) {
                        (Status::Excluded, format!("--mode {}", forced.unwrap().as_str()))
                    } else if let Some(why) = kernel.deny.family(family.id.name()) {
                        (Status::Unavailable, why)
                    } else if let Err(why) = unmet(alt, kernel, probed) {
                        (Status::Unavailable, why)
                    } else if let Some(why) = not_on_demand(alt, probed, |p| {
                        applies(p, alt.mode, kernel, probed).then(|| resolve(kernel, p))
                    }) {
                        (Status::Off, why)
                    } else {
                        match attach_alternative(ebpf, btf, kernel, probed, alt, on_demand) {
                            Ok(()) => {
                                attached = true;
                                probed.attached.push((family.id, alt.mode));
                                (Status::Attached, String::new())
                            }
                            Err(why) => (Status::Failed, why),
                        }
                    };
                    match status {
                        Status::Attached => tracing::debug!(family = family.id.name(), alternative = alt.name, "attached"),
                        Status::Failed | Status::Unavailable => {
                            tracing::debug!(family = family.id.name(), alternative = alt.name, %reason, "{}", status.as_str())
                        }
                        _ => {}
                    }
                    let hooks = hooks(alt, kernel, probed);
                    AlternativeReport {
                        name: alt.name,
                        mode: alt.mode,
                        status,
                        reason,
                        targets: targets(&hooks),
                        hooks,
                        degraded: alt.degraded,
                    }
                })
                .collect();
            FamilyReport { id: family.id, description: family.description, required: family.required, alternatives }
        })
        .collect()
}

/// The programs of `alt` that apply to this kernel, each with its hook and target (`a|b` resolved).
fn hooks(alt: &Alternative, kernel: &KernelInfo, probed: &Probed) -> Vec<HookReport> {
    alt.programs
        .iter()
        .filter(|p| applies(p, alt.mode, kernel, probed))
        .map(|p| HookReport {
            program: p.program.to_string(),
            hook: p.hook,
            target: resolve(kernel, p),
            on_demand: p.on_demand,
        })
        .collect()
}

/// Distinct attach targets (entry and return hooks share one).
fn targets(hooks: &[HookReport]) -> Vec<&'static str> {
    let mut t: Vec<&'static str> = Vec::new();
    for h in hooks {
        if !t.contains(&h.target) {
            t.push(h.target);
        }
    }
    t
}

/// The concrete target of `spec` on this kernel (the first available of `a|b`).
fn resolve(kernel: &KernelInfo, spec: &ProgramSpec) -> &'static str {
    match spec.hook {
        Hook::FEntry | Hook::FExit | Hook::KProbe | Hook::KRetProbe if spec.target.contains('|') => {
            needs::resolve_function(kernel, spec.target).unwrap_or(spec.target)
        }
        _ => spec.target,
    }
}

/// Why `alt` is off: it needs a flag ([`Need::OptIn`]) the operator did not give.
fn switched_off(alt: &Alternative, kernel: &KernelInfo, probed: &Probed) -> Option<String> {
    alt.needs
        .iter()
        .filter(|n| matches!(n, Need::OptIn(_)))
        .find_map(|n| needs::check(n, alt.mode, kernel, probed).err())
}

/// Why `alt` is off: a hook of it marked on demand ([`OnDemand`]) runs on a path every process takes, and in this
/// mode on this kernel it could not be detached and attached again after start-up, so it would be attached for good,
/// a price every process on the host pays. Such a family is off unless `--probes.keep-attached` accepts the price
/// (issue 21: a family had only at a host-wide cost is off by default, with a flag). A kprobe cannot be attached
/// after the capability drop (it opens a perf event, which needs CAP_PERFMON); a detached fentry/fexit program
/// cannot attach again where `probed.reattach` failed (5.10). `tp_btf` programs attach again wherever they load.
/// `target`: a program's target on this kernel, `None` where its hook does not exist here (its `when`).
pub(super) fn not_on_demand(
    alt: &Alternative,
    probed: &Probed,
    target: impl Fn(&ProgramSpec) -> Option<&'static str>,
) -> Option<String> {
    if probed.keep_attached {
        return None;
    }
    let fixed = |p: &&ProgramSpec| match p.hook {
        Hook::KProbe | Hook::KRetProbe => true,
        Hook::FEntry | Hook::FExit => probed.reattach.is_err(),
        Hook::TpBtf | Hook::Tracepoint | Hook::Iter => false,
    };
    let hooks: Vec<&ProgramSpec> =
        alt.programs.iter().filter(|p| p.on_demand != OnDemand::Always).filter(fixed).collect();
    let mut targets: Vec<&str> = Vec::new();
    for t in hooks.iter().filter_map(|p| target(p)) {
        if !targets.contains(&t) {
            targets.push(t);
        }
    }
    let first = hooks.iter().find(|p| target(p).is_some())?;
    let (why, price) = match first.hook {
        Hook::KProbe | Hook::KRetProbe => (
            "kprobe mode: a kprobe cannot be attached on demand (it opens a perf event, which needs CAP_PERFMON, \
             dropped after start-up)"
                .to_string(),
            "a kprobe trap (and a kretprobe's) per call",
        ),
        _ => (
            format!(
                "fentry mode on this kernel: a detached fentry program cannot attach again ({})",
                probed.reattach.as_ref().err().map_or("", String::as_str)
            ),
            "a trampoline and its programs per call",
        ),
    };
    Some(format!(
        "off by default: {why}, so its hooks on {} ({}) would stay attached for good, run by every process on the \
         host: {price}; {} switches it on at that price",
        targets.join(", "),
        first.on_demand.hooks(),
        super::arming::KEEP_ATTACHED
    ))
}

/// Whether `spec`'s hook exists on this kernel (its `when`, if any, holds).
fn applies(spec: &ProgramSpec, mode: Mode, kernel: &KernelInfo, probed: &Probed) -> bool {
    spec.when.as_ref().is_none_or(|w| needs::check(w, mode, kernel, probed).is_ok())
}

/// All unmet needs of `alt`, joined; `Ok` when none.
fn unmet(alt: &Alternative, kernel: &KernelInfo, probed: &Probed) -> Result<(), String> {
    let mut reasons: Vec<String> = Vec::new();
    for need in alt.needs {
        if let Err(why) = needs::check(need, alt.mode, kernel, probed)
            && !reasons.contains(&why)
        {
            reasons.push(why);
        }
    }
    if reasons.is_empty() { Ok(()) } else { Err(reasons.join("; ")) }
}

/// Loads and attaches every program of `alt`; on failure unloads what it loaded.
fn attach_alternative(
    ebpf: &mut Ebpf,
    btf: &Btf,
    kernel: &KernelInfo,
    probed: &Probed,
    alt: &Alternative,
    on_demand: &mut Collected,
) -> Result<(), String> {
    for (i, spec) in alt.programs.iter().enumerate() {
        if !applies(spec, alt.mode, kernel, probed) {
            continue; // a hook of another kernel generation
        }
        let target = resolve(kernel, spec);
        if let Err(e) = attach_program(ebpf, btf, spec, target, on_demand) {
            let names: Vec<String> = alt.programs[..=i].iter().map(|p| p.program.to_string()).collect();
            on_demand.forget(&names);
            for done in &alt.programs[..=i] {
                unload(ebpf, done);
            }
            return Err(format!("{} on {target}: {e}", spec.program));
        }
    }
    // Only with `--probes.keep-attached` (`not_on_demand`).
    for p in alt.programs.iter().filter(|p| matches!(p.hook, Hook::KProbe | Hook::KRetProbe)) {
        if p.on_demand != OnDemand::Always {
            on_demand.attached_for_good(
                p.on_demand,
                "kprobe mode, --probes.keep-attached: attaching a kprobe opens a perf event, which needs \
                 CAP_PERFMON, dropped after start-up",
            );
        }
    }
    Ok(())
}

/// Loads and attaches one program. A tracing program attached on demand ([`ProgramSpec::on_demand`]) is attached by
/// its fd and handed to `on_demand`, which detaches and attaches it later (`arming`); a kprobe cannot be attached
/// again after the capability drop, so a marked kprobe makes its group's hooks permanent.
fn attach_program(
    ebpf: &mut Ebpf,
    btf: &Btf,
    spec: &ProgramSpec,
    target: &str,
    on_demand: &mut Collected,
) -> Result<(), String> {
    let name = spec.program.to_string();
    let prog = program(ebpf, &name)?;
    let e = |e: aya::programs::ProgramError| error_chain(&e);
    let demand = |on_demand: &mut Collected, fd: Result<&aya::programs::ProgramFd, _>| -> Result<(), String> {
        let fd = fd.map_err(e)?.try_clone().map_err(|err| err.to_string())?;
        on_demand.attach(spec.on_demand, name.clone(), fd).map_err(|err| format!("attaching by fd: {err}"))
    };
    match spec.hook {
        Hook::FEntry => {
            let p: &mut FEntry = prog.try_into().map_err(e)?;
            p.load(target, btf).map_err(e)?;
            if spec.on_demand != OnDemand::Always {
                demand(on_demand, p.fd())?;
            } else {
                p.attach().map_err(e)?;
            }
        }
        Hook::FExit => {
            let p: &mut FExit = prog.try_into().map_err(e)?;
            p.load(target, btf).map_err(e)?;
            if spec.on_demand != OnDemand::Always {
                demand(on_demand, p.fd())?;
            } else {
                p.attach().map_err(e)?;
            }
        }
        Hook::KProbe | Hook::KRetProbe => {
            let p: &mut KProbe = prog.try_into().map_err(e)?;
            // One program may serve several functions (e.g. the system calls that end an operation).
            if p.fd().is_err() {
                p.load().map_err(e)?;
            }
            p.attach(target, 0).map_err(e)?;
        }
        Hook::TpBtf => {
            let p: &mut BtfTracePoint = prog.try_into().map_err(e)?;
            p.load(target, btf).map_err(e)?;
            if spec.on_demand != OnDemand::Always {
                demand(on_demand, p.fd())?;
            } else {
                p.attach().map_err(e)?;
            }
        }
        Hook::Iter => {
            let p: &mut Iter = prog.try_into().map_err(e)?;
            p.load(target, btf).map_err(e)?;
            // Linking proves the kernel accepts it; the sweeper makes its own link per run.
            let link = p.attach().map_err(e)?;
            p.detach(link).map_err(e)?;
        }
        Hook::Tracepoint => {
            let (group, name) = target.split_once(':').ok_or("tracepoint target must be group:name")?;
            let p: &mut TracePoint = prog.try_into().map_err(e)?;
            // One program may serve several tracepoints (e.g. every clone flavour).
            if p.fd().is_err() {
                p.load().map_err(e)?;
            }
            p.attach(group, name).map_err(e)?;
        }
    }
    Ok(())
}

fn unload(ebpf: &mut Ebpf, spec: &ProgramSpec) {
    use aya::programs::Program;
    // Unloading also detaches the program's links.
    let _ = match ebpf.program_mut(&spec.program.to_string()) {
        Some(Program::FEntry(p)) => p.unload(),
        Some(Program::FExit(p)) => p.unload(),
        Some(Program::KProbe(p)) => p.unload(),
        Some(Program::BtfTracePoint(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        Some(Program::Iter(p)) => p.unload(),
        _ => Ok(()),
    };
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program, String> {
    ebpf.program_mut(name).ok_or_else(|| format!("program {name} is missing from the eBPF object"))
}

/// An error and its sources on one line, e.g. `load failed: Operation not permitted (os error 1)`.
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    // aya appends the verifier log, which is empty for EPERM and long otherwise. Its last line is the verifier's
    // verdict (e.g. `unknown func bpf_get_current_task_btf#158`), so it is kept after the first.
    let mut lines = msg.lines().map(str::trim_end).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let first = first.trim_end_matches("Verifier output:").trim_end().trim_end_matches('.').to_string();
    match lines.rfind(|l| !l.starts_with("processed ")) {
        Some(last) => format!("{first} … {last}"),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{
        FamilyId, KEEP_ATTACHED,
        families::{self, FAMILIES},
    };

    /// The families with hooks attached on demand (`OnDemand`), which every process's paths run.
    const ON_DEMAND: [FamilyId; 4] = [
        families::fork_copies::ID,
        families::secondary_tlb::ID,
        families::causes::ID,
        families::overlapping_brackets::ID,
    ];

    fn probed(reattach: Result<(), String>, keep_attached: bool) -> Probed {
        Probed {
            trampolines: Ok(()),
            wide_trampolines: Ok(()),
            reattach,
            keep_attached,
            attached: Vec::new(),
            opted_in: Vec::new(),
        }
    }

    /// Why each family's alternative of `mode` is off (`None`: planned as usual), every hook taken as existing.
    fn plan(mode: Mode, probed: &Probed) -> Vec<(FamilyId, Option<String>)> {
        FAMILIES
            .iter()
            .flat_map(|f| f.alternatives().into_iter().filter(|a| a.mode == mode).map(move |a| (f.id, a)))
            .map(|(id, alt)| (id, not_on_demand(&alt, probed, |p| Some(p.target))))
            .collect()
    }

    #[test]
    fn kprobe_mode_switches_off_the_families_with_on_demand_hooks_unless_kept_attached() {
        for (id, why) in plan(Mode::Kprobe, &probed(Ok(()), false)) {
            if ON_DEMAND.contains(&id) {
                let why = why.unwrap_or_else(|| panic!("{id} is planned as usual in kprobe mode"));
                for part in ["off by default", "kprobe mode", "CAP_PERFMON", "every process", KEEP_ATTACHED] {
                    assert!(why.contains(part), "{id}: {why:?} does not say {part:?}");
                }
            } else {
                assert_eq!(why, None, "{id} has no on-demand hook");
            }
        }
        assert!(
            plan(Mode::Kprobe, &probed(Ok(()), true)).iter().all(|(_, why)| why.is_none()),
            "{KEEP_ATTACHED} attaches them for good"
        );
    }

    #[test]
    fn fentry_mode_is_off_only_where_a_detached_program_cannot_attach_again() {
        assert!(plan(Mode::Fentry, &probed(Ok(()), false)).iter().all(|(_, why)| why.is_none()));
        let refused = probed(Err("EINVAL".into()), false);
        for (id, why) in plan(Mode::Fentry, &refused) {
            assert_eq!(why.is_some(), ON_DEMAND.contains(&id), "{id}: {why:?}");
            if let Some(why) = why {
                assert!(why.contains("(EINVAL)") && why.contains(KEEP_ATTACHED), "{id}: {why}");
            }
        }
        assert!(plan(Mode::Fentry, &probed(Err("EINVAL".into()), true)).iter().all(|(_, why)| why.is_none()));
        // tp_btf programs attach again wherever they load: the fork-copy fallback stays on demand.
        assert!(plan(Mode::Tracepoint, &refused).iter().all(|(_, why)| why.is_none()));
    }

    #[test]
    fn the_reason_names_the_hooks_that_exist_on_this_kernel() {
        let fork = FAMILIES.iter().find(|f| f.id == families::fork_copies::ID).unwrap();
        let kprobe = fork.alternatives().into_iter().find(|a| a.mode == Mode::Kprobe).unwrap();
        let why = not_on_demand(&kprobe, &probed(Ok(()), false), |p| Some(p.target.split('|').next().unwrap()));
        assert!(why.as_deref().unwrap().contains("hooks on folio_add_new_anon_rmap (fork-copy hook)"), "{why:?}");
        assert_eq!(not_on_demand(&kprobe, &probed(Ok(()), false), |_| None), None, "no such hook here");
    }
}
