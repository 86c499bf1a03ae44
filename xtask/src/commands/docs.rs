//! `cargo xtask docs [--check]`: regenerates the generated documentation — today `docs/metrics.md`, the metrics
//! reference the agent builds from its metric families (`mmuscope metrics-reference`). `--check` only compares
//! and fails when the file is out of date (the agent's unit tests check the same).

use std::{fs, process::ExitCode};

use anyhow::{Context, Result, bail};

use crate::{
    cli::DocsArgs,
    commands::build,
    process, progress,
    setup::{self, Mode},
    toolchain,
    workspace::Workspace,
};

/// Generated files, relative to the workspace root, with the agent command that prints each.
const GENERATED: &[(&str, &str)] = &[("docs/metrics.md", "metrics-reference")];

pub fn run(ws: &Workspace, args: &DocsArgs) -> Result<ExitCode> {
    setup::setup(ws, build::GROUPS, Mode::Install)?;
    let mut stale = Vec::new();
    for (file, command) in GENERATED {
        let mut cargo = toolchain::host_cargo(ws);
        cargo.args(["run", "--quiet", "--package", "mmuscope", "--bin", "mmuscope", "--", command]);
        println!("$ {}", process::describe(&cargo));
        let out = process::capture(&mut cargo)?;
        if !out.status.success() {
            bail!("`{}` failed ({}): {}", process::describe(&cargo), out.status, String::from_utf8_lossy(&out.stderr));
        }
        let path = ws.root.join(file);
        let current = fs::read(&path).unwrap_or_default();
        if current == out.stdout {
            progress::say("docs", format!("{file} is up to date"));
        } else if args.check {
            stale.push(*file);
        } else {
            fs::create_dir_all(path.parent().unwrap_or(&ws.root))
                .with_context(|| format!("creating {file}'s directory"))?;
            fs::write(&path, &out.stdout).with_context(|| format!("writing {file}"))?;
            progress::say("docs", format!("wrote {file}"));
        }
    }
    if !stale.is_empty() {
        bail!("out of date: {} (run `cargo xtask docs`)", stale.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
