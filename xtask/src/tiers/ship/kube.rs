//! `deploy/kubernetes`: rendered with `kubectl kustomize` (offline), validated with `kubernetes-validate --strict`
//! against Kubernetes 1.30 (the oldest the issue asks for) and the newest schemas it has; the operator's custom
//! resources, which kubernetes-validate has no schema for, against the operator's API types; the DaemonSet's
//! security requirements and the copies of the config and the rules checked in `scripts/kube_check.py`.

use std::{fs, process::Command};

use anyhow::{Context, Result, bail};

use super::{say, tools::Tools};
use crate::{process, workspace::Workspace};

const DIR: &str = "deploy/kubernetes";
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];
const KUBE_CHECK: &str = include_str!("scripts/kube_check.py");
const VALIDATE_CRS: &str = include_str!("scripts/validate_crs.mjs");

pub fn check(ws: &Workspace, tools: &Tools) -> Result<()> {
    let toml = fs::read(ws.root.join(DIR).join("mmuscope.toml"))?;
    if toml != fs::read(ws.root.join("deploy/systemd/mmuscope.toml"))? {
        bail!("{DIR}/mmuscope.toml differs from deploy/systemd/mmuscope.toml (copy it over)");
    }
    let scratch = ws.target_dir().join("ship/kubernetes");
    fs::create_dir_all(&scratch)?;
    let out = process::capture(Command::new("kubectl").arg("kustomize").arg(ws.root.join(DIR)))
        .context("kubectl (its `kustomize` renders the manifests offline)")?;
    if !out.status.success() {
        bail!("kubectl kustomize {DIR}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let rendered = scratch.join("rendered.yaml");
    fs::write(&rendered, &out.stdout)?;
    say(format!("kubectl kustomize {DIR} → {}", ws.display(&rendered)));

    // The NetworkPolicy example is not in the kustomization (its selectors are per cluster); it is validated too.
    let example = ws.root.join(DIR).join("networkpolicy.example.yaml");
    for version in KUBERNETES_VERSIONS {
        let out = process::capture(
            Command::new(&tools.kubernetes_validate).args(["--strict", "-k", version]).arg(&rendered).arg(&example),
        )?;
        let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        say(format!("kubernetes-validate --strict -k {version}:\n{}", said.trim_end()));
        let unexpected_warning = said
            .lines()
            .filter(|l| l.starts_with("WARN"))
            .any(|l| !(l.contains("Couldn't find schema for kind") && l.contains("monitoring.coreos.com")));
        if !out.status.success() || said.contains("ERROR") || unexpected_warning {
            bail!("kubernetes-validate --strict -k {version} found problems");
        }
    }

    let crs = scratch.join("crs.json");
    let script = scratch.join("kube_check.py");
    fs::write(&script, KUBE_CHECK)?;
    let rules = ws.root.join("deploy/prometheus/mmuscope.rules.yml");
    process::run(Command::new(&tools.python).arg(&script).arg(&rendered).arg(&rules).arg(&crs))?;
    // Bare imports resolve from the script's own directory, so it runs next to node_modules.
    let validator = tools.npm_dir.join("validate_crs.mjs");
    fs::write(&validator, VALIDATE_CRS)?;
    process::run(Command::new("node").arg(&validator).arg(&crs))
}
