//! `cargo xtask docs [--check]`: regenerates the generated documentation — `docs/metrics.md`, the metrics reference
//! the agent builds from its metric families (`mmuscope metrics-reference`), and the man pages and shell completions
//! in `deploy/man/` and `deploy/completions/` (`mmuscope generate DIR`, from the clap definition; the Debian package
//! installs them). `--check` only compares and fails when a file is out of date (the agent's unit tests check the
//! same).

use std::{fs, process::ExitCode};

use anyhow::{Context, Result, bail};

use crate::{
    commands::build,
    process, progress,
    setup::{self, Mode},
    toolchain,
    workspace::Workspace,
};

/// Generated files, relative to the workspace root, with the agent command that prints each.
const GENERATED: &[(&str, &str)] = &[("docs/metrics.md", "metrics-reference")];

/// The flags of `cargo xtask docs`.
#[derive(clap::Args)]
pub struct DocsArgs {
    /// Only check that the generated files are up to date; exit non-zero if not.
    #[arg(long)]
    pub check: bool,
}

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
    stale.extend(generated_tree(ws, args)?);
    if !stale.is_empty() {
        bail!("out of date: {} (run `cargo xtask docs`)", stale.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `mmuscope generate` into a scratch directory, then each file compared with (or copied to) its place in `deploy/`.
fn generated_tree(ws: &Workspace, args: &DocsArgs) -> Result<Vec<&'static str>> {
    let scratch = ws.root.join("target/xtask-docs");
    let _ = fs::remove_dir_all(&scratch);
    let mut cargo = toolchain::host_cargo(ws);
    cargo.args(["run", "--quiet", "--package", "mmuscope", "--bin", "mmuscope", "--", "generate"]).arg(&scratch);
    println!("$ {}", process::describe(&cargo));
    let out = process::capture(&mut cargo)?;
    if !out.status.success() {
        bail!("`{}` failed ({}): {}", process::describe(&cargo), out.status, String::from_utf8_lossy(&out.stderr));
    }
    let mut stale = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let rel = std::path::Path::new(line).strip_prefix(&scratch).context("generate wrote outside its directory")?;
        let (fresh, path) = (fs::read(line)?, ws.root.join("deploy").join(rel));
        let shown = format!("deploy/{}", rel.display());
        if fs::read(&path).unwrap_or_default() == fresh {
            progress::say("docs", format!("{shown} is up to date"));
        } else if args.check {
            stale.push("deploy/man, deploy/completions");
        } else {
            fs::create_dir_all(path.parent().unwrap_or(&ws.root)).with_context(|| format!("creating {shown}'s dir"))?;
            fs::write(&path, fresh).with_context(|| format!("writing {shown}"))?;
            progress::say("docs", format!("wrote {shown}"));
        }
    }
    stale.dedup();
    Ok(stale)
}
