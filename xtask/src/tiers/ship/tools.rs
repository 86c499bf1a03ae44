//! The tier's tools from the package registries, installed into `.tools/ship/` (never globally) and pinned, so a
//! new upstream release cannot change a check under us. Each is reinstalled only when its pin changes.
//!
//! * a Python venv (Debian's python3-venv) with kubernetes-validate, jsonschema and PyYAML from PyPI;
//! * npm packages: `@grafana/schema` + `ts-json-schema-generator` (the dashboard JSON Schema), Chart.js and
//!   chartjs-chart-matrix (rendering), `@kubernetes-models/prometheus-operator` (the CRs' schemas);
//! * cargo-deb from crates.io into `.tools/bin`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use super::say;
use crate::{process, toolchain, workspace::Workspace};

const PYTHON_REQUIREMENTS: &[&str] = &["kubernetes-validate==1.37.0", "jsonschema==4.26.0", "PyYAML==6.0.3"];

const PACKAGE_JSON: &str = r#"{
  "name": "mmuscope-ship-tools",
  "private": true,
  "dependencies": {
    "@grafana/schema": "13.2.3",
    "@kubernetes-models/prometheus-operator": "6.0.0",
    "chart.js": "4.6.1",
    "chartjs-chart-matrix": "3.1.0",
    "ts-json-schema-generator": "2.9.0"
  }
}
"#;

const CARGO_DEB: &str = "3.8.0";

pub struct Tools {
    /// The venv's python (runs the helper scripts that need jsonschema or PyYAML).
    pub python: PathBuf,
    pub kubernetes_validate: PathBuf,
    /// Where `node_modules/` is; node scripts run from here so their imports resolve.
    pub npm_dir: PathBuf,
    pub cargo_deb: PathBuf,
}

impl Tools {
    pub fn node_modules(&self) -> PathBuf {
        self.npm_dir.join("node_modules")
    }
}

pub fn ensure(ws: &Workspace) -> Result<Tools> {
    let dir = ws.tools.join("ship");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let venv = dir.join("venv");
    python_venv(&venv)?;
    let npm_dir = dir.join("npm");
    npm_packages(&npm_dir)?;
    let cargo_deb = cargo_deb(ws)?;
    Ok(Tools {
        python: venv.join("bin/python"),
        kubernetes_validate: venv.join("bin/kubernetes-validate"),
        npm_dir,
        cargo_deb,
    })
}

/// `stamp` holds what was installed last; true when it equals `want`.
fn current(stamp: &Path, want: &str) -> bool {
    fs::read_to_string(stamp).is_ok_and(|have| have == want)
}

fn python_venv(venv: &Path) -> Result<()> {
    let want = PYTHON_REQUIREMENTS.join("\n");
    let stamp = venv.join("mmuscope-requirements.txt");
    if venv.join("bin/python").is_file() && current(&stamp, &want) {
        say(format!("Python tools present ({})", PYTHON_REQUIREMENTS.join(" ")));
        return Ok(());
    }
    if !venv.join("bin/pip").is_file() {
        process::run(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(venv))
            .context("python3 -m venv (Debian package python3-venv)")?;
    }
    say(format!("installing {} from PyPI into {}", PYTHON_REQUIREMENTS.join(" "), venv.display()));
    process::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PYTHON_REQUIREMENTS),
    )?;
    fs::write(&stamp, want)?;
    Ok(())
}

fn npm_packages(npm_dir: &Path) -> Result<()> {
    fs::create_dir_all(npm_dir)?;
    let stamp = npm_dir.join("node_modules/.mmuscope-package.json");
    if current(&stamp, PACKAGE_JSON) {
        say(format!("npm tools present ({})", npm_dir.display()));
        return Ok(());
    }
    fs::write(npm_dir.join("package.json"), PACKAGE_JSON)?;
    say(format!("installing the npm tools into {} (~10 s)", npm_dir.display()));
    process::run(Command::new("npm").current_dir(npm_dir).args([
        "install",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "--no-package-lock",
    ]))
    .context("npm (comes with Node.js, Debian package nodejs)")?;
    fs::write(&stamp, PACKAGE_JSON)?;
    Ok(())
}

pub(in crate::tiers) fn cargo_deb(ws: &Workspace) -> Result<PathBuf> {
    let bin = ws.tools_bin().join("cargo-deb");
    let version = process::capture(Command::new(&bin).arg("--version")).ok().filter(|o| o.status.success());
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if version == format!("cargo-deb {CARGO_DEB}") {
        say(format!("{version} present ({})", ws.display(&bin)));
        return Ok(bin);
    }
    say(format!("building cargo-deb {CARGO_DEB} from crates.io into {} (~3 min on 2 cores)", ws.display(&ws.tools)));
    let mut cmd = toolchain::host_cargo(ws);
    cmd.args(["install", &format!("cargo-deb@{CARGO_DEB}"), "--locked", "--force", "--root"])
        .arg(&ws.tools)
        // Keeps the build out of the workspace's target dir and reusable if the pin changes back.
        .env("CARGO_TARGET_DIR", ws.target_dir().join("tools-build"));
    process::run(&mut cmd)?;
    Ok(bin)
}
