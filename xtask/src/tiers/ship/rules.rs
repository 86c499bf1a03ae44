//! `deploy/prometheus`: the rules files are what `deploy/prometheus/generate.py` writes (the rules and the
//! operator's PrometheusRule), they pass `promtool check rules` and their unit tests (`promtool test rules`: every
//! alert fires and stays quiet where it should), and the example scrape configuration passes `promtool check
//! config` (with its rule file path pointed at the repository's copy, as the package would install it).

use std::{fs, process::Command};

use anyhow::{Result, bail};

use super::say;
use crate::{process, workspace::Workspace};

const DIR: &str = "deploy/prometheus";
/// Where the example configuration expects the rules (the Debian package's path).
const INSTALLED_RULES: &str = "/usr/share/mmuscope/prometheus/mmuscope.rules.yml";

pub fn check(ws: &Workspace) -> Result<()> {
    let dir = ws.root.join(DIR);
    process::run(Command::new("python3").arg(dir.join("generate.py")).arg("--check"))?;
    promtool(&dir, &["check", "rules", "mmuscope.rules.yml"])?;
    promtool(&dir, &["test", "rules", "mmuscope.rules.test.yml"])?;

    let config = fs::read_to_string(dir.join("prometheus.yml"))?;
    if !config.contains(INSTALLED_RULES) {
        bail!("{DIR}/prometheus.yml does not load {INSTALLED_RULES}");
    }
    let scratch = ws.target_dir().join("ship/prometheus-config");
    fs::create_dir_all(&scratch)?;
    let rules = dir.join("mmuscope.rules.yml");
    fs::write(scratch.join("prometheus.yml"), config.replace(INSTALLED_RULES, &rules.display().to_string()))?;
    promtool(&scratch, &["check", "config", "prometheus.yml"])
}

/// Runs promtool in `dir` and shows what it printed.
fn promtool(dir: &std::path::Path, args: &[&str]) -> Result<()> {
    let out = process::capture(Command::new("promtool").current_dir(dir).args(args))?;
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    say(format!("promtool {}:\n{}", args.join(" "), said.trim_end()));
    if !out.status.success() {
        bail!("promtool {} failed ({})", args.join(" "), out.status);
    }
    Ok(())
}
