//! `dashboards/`: the committed JSON is what `dashboards/generate.py` writes, it passes the linter checklist
//! ([`super::dashlint`]) and the JSON Schema generated from `@grafana/schema` (`dashboards/schema/`), and the
//! provisioning file points where the Debian package installs the dashboards.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{dashlint, say, tools::Tools};
use crate::{process, workspace::Workspace};

pub const FILES: &[&str] = &["mmuscope-fleet.json", "mmuscope-host.json", "mmuscope-agent.json"];
/// Where the Debian package installs them (agent/Cargo.toml) and the provisioning file looks.
const INSTALLED: &str = "/usr/share/mmuscope/dashboards";

pub fn check(ws: &Workspace, tools: &Tools) -> Result<()> {
    let dir = ws.root.join("dashboards");
    process::run(Command::new(&tools.python).arg(dir.join("generate.py")).arg("--check"))?;

    let mut problems = Vec::new();
    let (mut panels, mut queries) = (0, 0);
    for name in FILES {
        let dash = load(ws, name)?;
        let report = dashlint::lint(&dash);
        panels += report.panels;
        queries += report.queries;
        problems.extend(report.problems.into_iter().map(|p| format!("{name}: {p}")));
    }
    say(format!("dashboard linter checklist: {} dashboards, {panels} panels, {queries} queries", FILES.len()));
    if !problems.is_empty() {
        bail!("dashboard linter:\n{}", problems.join("\n"));
    }

    let schema = grafana_schema(ws, tools)?;
    let files: Vec<PathBuf> = FILES.iter().map(|f| dir.join(f)).collect();
    process::run(Command::new(&tools.python).arg(dir.join("schema/validate.py")).arg(&schema).args(&files))?;

    let provisioning = fs::read_to_string(dir.join("provisioning/dashboards.yaml"))?;
    if !provisioning.contains(&format!("path: {INSTALLED}")) {
        bail!("dashboards/provisioning/dashboards.yaml does not point at {INSTALLED}");
    }
    let yaml_ok = "import sys, yaml; [yaml.safe_load(open(f)) for f in sys.argv[1:]]";
    process::run(
        Command::new(&tools.python)
            .args(["-c", yaml_ok])
            .arg(dir.join("provisioning/dashboards.yaml"))
            .arg(dir.join("provisioning/datasources.yaml")),
    )
}

pub fn load(ws: &Workspace, name: &str) -> Result<Value> {
    let path = ws.root.join("dashboards").join(name);
    serde_json::from_str(&fs::read_to_string(&path)?).with_context(|| format!("parsing {}", path.display()))
}

/// The JSON Schema of the dashboard model and the panel options we use, generated from `@grafana/schema`'s
/// TypeScript types by ts-json-schema-generator (regenerated when `grafana-types.ts` changes).
fn grafana_schema(ws: &Workspace, tools: &Tools) -> Result<PathBuf> {
    let types = fs::read_to_string(ws.root.join("dashboards/schema/grafana-types.ts"))?;
    let copy = tools.npm_dir.join("grafana-types.ts");
    let schema = tools.npm_dir.join("grafana.schema.json");
    if schema.is_file() && fs::read_to_string(&copy).is_ok_and(|c| c == types) {
        return Ok(schema);
    }
    fs::write(&copy, &types)?;
    process::run(
        Command::new(tools.node_modules().join(".bin/ts-json-schema-generator"))
            .current_dir(&tools.npm_dir)
            .args(["--path", "grafana-types.ts", "--type", "*", "--no-type-check", "-o"])
            .arg(&schema),
    )?;
    Ok(schema)
}
