//! `mmuscope check`: the probe plan for this kernel as a table or JSON. It really loads and
//! attaches (then detaches on exit), so "attached" means it worked here, not that it should.

use std::io::Write;

use crate::{
    cli::CheckArgs,
    probes::{self, PlanReport, Probes},
};

/// Exit code of `--strict` when a required family is missing or a family runs on a fallback.
pub const EXIT_STRICT: i32 = 3;

pub fn run(args: &CheckArgs) -> anyhow::Result<i32> {
    crate::privileges::preflight::check()?;
    let kernel = args.kernel.probe()?;
    let options = probes::Options {
        mode: args.kernel.mode,
        stats_map_entries: args.kernel.stats_map_entries,
        slow_min_duration: None,
        pin: None,
        stacks: true,
        keep_attached: args.kernel.probes_keep_attached,
        opt_in: args.kernel.opt_in(),
    };
    let probes = Probes::load(&kernel, &options)?;
    let report = &probes.report;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, report)?;
        writeln!(out)?;
    } else {
        write_table(&mut out, report)?;
    }
    let missing = report.missing_required();
    let degraded = report.degraded();
    if args.strict && !(missing.is_empty() && degraded.is_empty()) {
        if !missing.is_empty() {
            eprintln!("mmuscope check --strict: required probe families not attached: {}", missing.join(", "));
        }
        if !degraded.is_empty() {
            eprintln!("mmuscope check --strict: probe families running on a fallback: {}", degraded.join(", "));
        }
        return Ok(EXIT_STRICT);
    }
    Ok(0)
}

fn write_table(out: &mut impl Write, r: &PlanReport) -> std::io::Result<()> {
    let cap = |c: &Result<(), String>| match c {
        Ok(()) => "available".to_string(),
        Err(why) => format!("unavailable: {why}"),
    };
    writeln!(out, "kernel      {} (BTF {})", r.kernel_release, r.btf_path)?;
    writeln!(out, "generation  {}", r.generation_description)?;
    writeln!(out, "fentry      {}", cap(&r.capabilities.trampolines))?;
    writeln!(out, "kprobe      {}", cap(&r.capabilities.kprobes))?;
    // Where the hooks marked on demand cannot switch, their families are off (`attach::not_on_demand`).
    let flag = probes::KEEP_ATTACHED;
    let on_demand = match (&r.capabilities.trampolines, &r.capabilities.reattach) {
        (Ok(()), Ok(())) => format!(
            "fentry and tp_btf hooks switch with the inventory; kprobes cannot attach again after start-up, so \
             families with one are off in kprobe mode without {flag}"
        ),
        (Ok(()), Err(why)) => format!(
            "tp_btf hooks switch with the inventory; kprobes, and fentry programs on this kernel ({why}), cannot \
             attach again, so families with one are off in kprobe and fentry mode without {flag}"
        ),
        (Err(_), _) => format!(
            "tp_btf hooks switch with the inventory; kprobes cannot attach again after start-up, so families with \
             one are off in kprobe mode without {flag}"
        ),
    };
    writeln!(out, "on demand   {on_demand}")?;
    writeln!(
        out,
        "causes      {}",
        match &r.capabilities.cause_context {
            Ok(()) => "system call and reclaim context read per bracket".to_string(),
            Err(why) => format!("caller hooks only (no system call context: {why})"),
        }
    )?;
    match &r.capabilities.tracefs {
        Ok(t) => writeln!(out, "tracefs     {}", t.describe())?,
        Err(why) => writeln!(out, "tracefs     unavailable: {why}")?,
    }
    writeln!(out)?;
    let w = r.families.iter().map(|f| f.name().len()).chain([6]).max().unwrap_or(6);
    writeln!(out, "{:<w$} {:<11} {:<12} DETAIL", "FAMILY", "MODE", "STATUS")?;
    for f in &r.families {
        for (i, a) in f.alternatives.iter().enumerate() {
            let family = if i == 0 { f.name() } else { "" };
            let detail = match a.status {
                probes::Status::Attached if a.degraded.is_empty() => a.targets.join(", "),
                probes::Status::Attached => format!("{} (degraded: {})", a.targets.join(", "), a.degraded),
                _ => a.reason.clone(),
            };
            writeln!(out, "{family:<w$} {:<11} {:<12} {detail}", a.name, a.status.as_str())?;
        }
        if f.switched_off() {
            writeln!(
                out,
                "{:<w$} {:<11} {:<12} not attached: off by default, the flag above switches it on",
                "", "-", "OFF"
            )?;
        } else if f.attached().is_none() {
            writeln!(out, "{:<w$} {:<11} {:<12} no alternative attached", "", "-", "MISSING")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::{
        Mode, Status,
        report::{AlternativeReport, Capabilities, FamilyReport},
    };

    fn family(name: &'static str, required: bool, alts: &[(Mode, Status, &str)]) -> FamilyReport {
        let alternatives = alts
            .iter()
            .map(|&(mode, status, reason)| AlternativeReport {
                name: mode.as_str(),
                mode,
                status,
                reason: reason.to_string(),
                targets: vec!["f"],
                hooks: vec![],
                degraded: "",
            })
            .collect();
        FamilyReport { id: probes::FamilyId::new(name), description: "", required, alternatives }
    }

    /// kprobe mode without `--probes.keep-attached`: the family is shown off with the reason and an OFF line, is not
    /// missing, and the on-demand line says why.
    #[test]
    fn a_family_off_in_kprobe_mode_is_shown_off_not_missing() {
        let why = "off by default: kprobe mode: … --probes.keep-attached switches it on at that price";
        let report = PlanReport {
            kernel_release: "6.1".into(),
            btf_path: "/sys/kernel/btf/vmlinux".into(),
            generation: crate::kernel::Generation::InvalidateRange,
            generation_description: "",
            capabilities: Capabilities {
                trampolines: Err("not probed (--mode excludes fentry)".into()),
                kprobes: Ok(()),
                reattach: Err("no fentry: not probed (--mode excludes fentry)".into()),
                cause_context: Ok(()),
                tracefs: Err("not probed".into()),
            },
            families: vec![
                family(
                    "fork_copies",
                    true,
                    &[(Mode::Fentry, Status::Excluded, "--mode kprobe"), (Mode::Kprobe, Status::Off, why)],
                ),
                family("lost", false, &[(Mode::Kprobe, Status::Failed, "EINVAL")]),
            ],
            on_demand: Vec::new(),
        };
        let mut out = Vec::new();
        write_table(&mut out, &report).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("on demand   tp_btf hooks switch with the inventory; kprobes cannot attach again"),
            "{text}"
        );
        assert!(text.contains(&format!("kprobe      off          {why}")), "{text}");
        assert!(text.contains("OFF          not attached: off by default"), "{text}");
        assert_eq!(text.matches("MISSING").count(), 1, "only the failed family is missing: {text}");
        assert_eq!(report.missing_required(), Vec::<&str>::new());
    }
}
