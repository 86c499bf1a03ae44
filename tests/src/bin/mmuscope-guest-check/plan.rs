//! Step 1: `mmuscope check --json --mode M` must attach the `brackets` family in mode M and report the expected
//! mmu_notifier generation. Before it, [`off_by_default`]: where a family's hooks attached on demand cannot be
//! attached on demand in mode M (kprobe mode; fentry where a detached program does not attach again, 5.10), the
//! plan without flags must report that family off, naming `--probes.keep-attached`; the check and the agent then
//! run with that flag, so that those families are compared as everywhere else.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::record::Record;

/// The family every mode must attach.
const FAMILY: &str = "brackets";
/// Families that must attach in the forced mode too (fentry and kprobe), so that their comparisons — including the
/// ones that expect zero — mean something.
const ALSO_IN_MODE: &[&str] =
    &["secondary_tlb", "overlapping_brackets", "fork_copies", "causes", "interval_notifiers", "subscribers"];

/// Families off by default, with the flag that switches each on: given that flag, they too must attach in the forced
/// mode (every kernel of the matrix has their functions in BTF: `wp_page_copy`, or `do_wp_page` where it is inlined).
const OPT_IN: &[(&str, &str)] = &[("ksm_cow", "--probes.ksm-cow")];

/// The flag that attaches for good the hooks that cannot be attached on demand, switching their families on.
pub const KEEP_ATTACHED: &str = "--probes.keep-attached";

/// What the plan without [`KEEP_ATTACHED`] said about the families of [`ALSO_IN_MODE`].
pub struct OffByDefault {
    /// Families that must be off without [`KEEP_ATTACHED`] (the check and the agent then run with it).
    pub families: Vec<String>,
    /// Where the plan differs from what its own hooks and capabilities imply.
    pub problems: Vec<String>,
}

/// `mmuscope check --json --mode M` without [`KEEP_ATTACHED`]: each family of [`ALSO_IN_MODE`] whose mode-M
/// alternative has a hook attached on demand (`on_demand` not `always`) that cannot be attached on demand here (a
/// kprobe or kretprobe; a fentry or fexit where `capabilities.reattach` is unavailable) must be off — that
/// alternative `off` with a reason naming the mode and the flag, nothing attached — and every other one attached in
/// mode M. The flag is left out of `extra` for this run.
pub fn off_by_default(agent: &Path, extra: &[String], mode: &str) -> OffByDefault {
    if mode == "tracepoint" {
        return OffByDefault { families: Vec::new(), problems: Vec::new() };
    }
    let plain: Vec<String> = extra.iter().filter(|a| *a != KEEP_ATTACHED).cloned().collect();
    match run_check(agent, &plain, mode) {
        Ok(report) => off_in(&report, mode),
        Err(e) => OffByDefault { families: Vec::new(), problems: vec![format!("without {KEEP_ATTACHED}: {e}")] },
    }
}

/// [`off_by_default`] on the plan `report` of mode `mode`.
fn off_in(report: &Value, mode: &str) -> OffByDefault {
    let mut out = OffByDefault { families: Vec::new(), problems: Vec::new() };
    let reattach = report["capabilities"]["reattach"]["available"].as_bool();
    for name in ALSO_IN_MODE {
        let family = report["families"].as_array().and_then(|f| f.iter().find(|f| f["name"] == *name));
        let alts = family.and_then(|f| f["alternatives"].as_array());
        let Some(alt) = alts.and_then(|alts| alts.iter().find(|a| a["mode"] == mode)) else {
            out.problems.push(format!("without {KEEP_ATTACHED}: {name} has no {mode} alternative"));
            continue;
        };
        let fixed = |h: &&Value| match h["hook"].as_str() {
            Some("kprobe" | "kretprobe") => true,
            Some("fentry" | "fexit") => reattach == Some(false),
            _ => false,
        };
        let hooks = alt["hooks"].as_array().map(Vec::as_slice).unwrap_or_default();
        let expect_off = hooks.iter().filter(|h| h["on_demand"] != "always").any(|h| fixed(&h));
        let attached = alts.and_then(|alts| alts.iter().find(|a| a["status"] == "attached"));
        let (status, reason) = (alt["status"].as_str().unwrap_or("?"), alt["reason"].as_str().unwrap_or(""));
        let why_mode = if mode == "kprobe" { "kprobe mode" } else { "fentry mode on this kernel" };
        if expect_off {
            out.families.push((*name).to_owned());
            println!("  without {KEEP_ATTACHED}: {name}: {mode} {status}: {reason}");
            if status != "off" || attached.is_some() || !reason.contains(KEEP_ATTACHED) || !reason.contains(why_mode) {
                out.problems.push(format!(
                    "without {KEEP_ATTACHED}: {name} must be off ({mode} alternative `off` naming {why_mode:?} and the \
                     flag, nothing attached); {mode} is {status}: {reason:?}, attached: {:?}",
                    attached.and_then(|a| a["name"].as_str())
                ));
            }
        } else if attached.and_then(|a| a["mode"].as_str()) != Some(mode) {
            out.problems.push(format!(
                "without {KEEP_ATTACHED}: {name} attached in mode {:?}, expected {mode:?}{}",
                attached.and_then(|a| a["mode"].as_str()),
                why_not(family)
            ));
        }
    }
    out
}

pub fn check(
    agent: &Path,
    extra: &[String],
    mode: &str,
    expected_generation: &str,
    old_helpers: bool,
    kernel: &str,
    off: OffByDefault,
) -> Record {
    let mut problems = off.problems;
    let report = run_check(agent, extra, mode).unwrap_or_else(|e| {
        problems.push(e);
        Value::Null
    });
    let generation = report["generation"].as_str().map(str::to_owned);
    let family = report["families"].as_array().and_then(|f| f.iter().find(|f| f["name"] == FAMILY));
    let attached = family
        .and_then(|f| f["alternatives"].as_array())
        .and_then(|alts| alts.iter().find(|a| a["status"] == "attached"));
    let attached_mode = attached.and_then(|a| a["mode"].as_str()).map(str::to_owned);
    let families_not_attached = unattached_families(&report);

    if !report.is_null() {
        match &generation {
            Some(g) if g == expected_generation => {}
            other => problems.push(format!("generation {other:?}, expected {expected_generation:?}")),
        }
        // The cause context needs `bpf_task_pt_regs` (5.15): the agent must find it in BTF exactly where it exists.
        let context = report["capabilities"]["cause_context"]["available"].as_bool();
        if context != Some(!old_helpers) {
            problems.push(format!(
                "capabilities.cause_context.available {context:?}, expected {} ({})",
                !old_helpers,
                report["capabilities"]["cause_context"]["reason"].as_str().unwrap_or("no reason given")
            ));
        }
        if attached_mode.as_deref() != Some(mode) {
            problems.push(format!("{FAMILY} attached in mode {attached_mode:?}, expected {mode:?}{}", why_not(family)));
        }
        if mode != "tracepoint" {
            let opted_in = OPT_IN.iter().filter(|(_, flag)| extra.iter().any(|a| a == flag)).map(|(name, _)| name);
            for name in ALSO_IN_MODE.iter().chain(opted_in) {
                let f = report["families"].as_array().and_then(|f| f.iter().find(|f| f["name"] == *name));
                let m = f
                    .and_then(|f| f["alternatives"].as_array())
                    .and_then(|alts| alts.iter().find(|a| a["status"] == "attached"))
                    .and_then(|a| a["mode"].as_str());
                if m != Some(mode) {
                    problems.push(format!("{name} attached in mode {m:?}, expected {mode:?}{}", why_not(f)));
                }
            }
        }
    }
    Record::Check {
        kernel_release: kernel.to_owned(),
        mode: mode.to_owned(),
        generation,
        expected_generation: expected_generation.to_owned(),
        attached_mode,
        families_not_attached,
        off_without_keep_attached: off.families,
        pass: problems.is_empty(),
        problems,
    }
}

fn run_check(agent: &Path, extra: &[String], mode: &str) -> Result<Value, String> {
    let mut cmd = Command::new(agent);
    cmd.args(["check", "--json", "--mode", mode]).args(extra);
    let shown = format!("{} check --json --mode {mode} {}", agent.display(), extra.join(" "));
    let out = cmd.output().map_err(|e| format!("could not start `{shown}`: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&stdout).map_err(|e| {
        format!(
            "`{shown}` ({}) printed no JSON report ({e}); stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Families other than [`FAMILY`] with no attached alternative, as `name (required): alt status: reason; …`.
fn unattached_families(report: &Value) -> Vec<String> {
    let Some(families) = report["families"].as_array() else { return Vec::new() };
    families
        .iter()
        .filter(|f| f["name"] != FAMILY)
        .filter(|f| !f["alternatives"].as_array().is_some_and(|a| a.iter().any(|a| a["status"] == "attached")))
        .map(|f| {
            let required = if f["required"] == true { " (required)" } else { "" };
            format!("{}{required}{}", f["name"].as_str().unwrap_or("?"), why_not(Some(f)))
        })
        .collect()
}

/// ` (fentry failed: <reason>; …)` for the alternatives that did not attach.
fn why_not(family: Option<&Value>) -> String {
    let Some(alts) = family.and_then(|f| f["alternatives"].as_array()) else {
        return " (no such family in the report)".to_owned();
    };
    let reasons: Vec<String> = alts
        .iter()
        .filter(|a| a["status"] != "attached")
        .map(|a| {
            let (name, status, reason) = (&a["name"], &a["status"], &a["reason"]);
            format!(
                "{} {}: {}",
                name.as_str().unwrap_or("?"),
                status.as_str().unwrap_or("?"),
                reason.as_str().unwrap_or("")
            )
        })
        .collect();
    format!(" ({})", reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A plan where every family of [`ALSO_IN_MODE`] has one `mode` alternative with `status`/`reason` and a hook of
    /// kind `hook` attached `on_demand` for the family `name`, `always` for the others.
    fn plan(mode: &str, reattach: bool, name: &str, hook: &str, status: &str, reason: &str) -> Value {
        let families: Vec<Value> = ALSO_IN_MODE
            .iter()
            .map(|f| {
                let (on_demand, status, reason) =
                    if *f == name { ("while_subscribed", status, reason) } else { ("always", "attached", "") };
                json!({"name": f, "alternatives": [{"name": mode, "mode": mode, "status": status, "reason": reason,
                    "hooks": [{"hook": hook, "on_demand": on_demand}]}]})
            })
            .collect();
        json!({"capabilities": {"reattach": {"available": reattach}}, "families": families})
    }

    const OFF: &str = "off by default: kprobe mode: a kprobe cannot be attached on demand …; --probes.keep-attached";
    const OFF_FENTRY: &str = "off by default: fentry mode on this kernel: … (EINVAL) …; --probes.keep-attached";

    #[test]
    fn a_family_with_a_kprobe_on_demand_must_be_off_naming_the_flag() {
        let ok = off_in(&plan("kprobe", false, "causes", "kretprobe", "off", OFF), "kprobe");
        assert_eq!((ok.families, ok.problems), (vec!["causes".to_owned()], vec![]));
        let attached = off_in(&plan("kprobe", false, "causes", "kretprobe", "attached", ""), "kprobe");
        assert_eq!(attached.families, ["causes"], "still run with the flag");
        assert!(attached.problems[0].contains("causes must be off"), "{:?}", attached.problems);
        let unnamed = off_in(&plan("kprobe", false, "causes", "kprobe", "off", "off by default (--x)"), "kprobe");
        assert_eq!(unnamed.problems.len(), 1, "the reason must name the mode and the flag");
    }

    #[test]
    fn fentry_is_off_only_where_programs_do_not_attach_again() {
        let switching = off_in(&plan("fentry", true, "fork_copies", "fentry", "attached", ""), "fentry");
        assert!(switching.families.is_empty() && switching.problems.is_empty());
        let off_anyway = off_in(&plan("fentry", true, "fork_copies", "fentry", "off", OFF_FENTRY), "fentry");
        assert!(off_anyway.problems[0].contains("fork_copies attached in mode None"), "{:?}", off_anyway.problems);
        let old = off_in(&plan("fentry", false, "fork_copies", "fentry", "off", OFF_FENTRY), "fentry");
        assert_eq!((old.families, old.problems), (vec!["fork_copies".to_owned()], vec![]));
    }
}
