//! cargo-fuzz targets of the agent's parsers (`agent/fuzz/`): cargo-fuzz from crates.io into the tools dir, then a
//! bounded libFuzzer run per target with rustup's nightly toolchain (libFuzzer's instrumentation needs nightly flags;
//! the set-up never downloads rustup toolchains, so nightly must be there already).
//!
//! The corpus grows in `target/fuzz/corpus/<target>` (seeded from `agent/fuzz/seeds/<target>`), so a longer run
//! continues where the last one stopped. A crash fails the run and leaves its input in
//! `target/fuzz/artifacts/<target>/`, with the command that replays it.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{process, progress, toolchain, workspace::Workspace};

pub const CARGO_FUZZ: &str = "0.13.1";
/// Every target in `agent/fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &["config_toml", "web_config", "cgroup_path", "btf_plan"];
/// Seconds per target in the test command (`unit` tier); `cargo xtask fuzz --seconds N` runs longer.
pub const TIER_SECONDS: u32 = 10;

/// How the targets are compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Build {
    /// Optimized with debug assertions (cargo-fuzz `-O`): what long runs want, many more executions per second.
    Optimized,
    /// Unoptimized (cargo-fuzz `--dev`): for the test command's short run, where the build dominates. Optimizing
    /// the agent library with one codegen unit took 6.5 min of a CI run on 2 cores.
    Dev,
}

impl Build {
    fn flag(self) -> &'static str {
        match self {
            Self::Optimized => "-O",
            Self::Dev => "--dev",
        }
    }
}
/// Inputs up to this size (a BTF blob needs room; libFuzzer's default is 4 KiB).
const MAX_LEN: u32 = 65_536;

fn say(message: impl std::fmt::Display) {
    progress::say("fuzz", message);
}

/// `<tools>/bin/cargo-fuzz` at [`CARGO_FUZZ`], built with `cargo install --locked` when absent or of another version.
pub fn ensure_cargo_fuzz(ws: &Workspace) -> Result<PathBuf> {
    let bin = ws.tools_bin().join("cargo-fuzz");
    let version = process::capture(Command::new(&bin).arg("--version")).ok().filter(|o| o.status.success());
    let version = version.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    if version == format!("cargo-fuzz {CARGO_FUZZ}") {
        say(format!("{version} present ({})", ws.display(&bin)));
        return Ok(bin);
    }
    say(format!("building cargo-fuzz {CARGO_FUZZ} from crates.io into {} (~2 min on 2 cores)", ws.display(&ws.tools)));
    let mut cmd = toolchain::host_cargo(ws);
    cmd.args(["install", &format!("cargo-fuzz@{CARGO_FUZZ}"), "--locked", "--force", "--root"])
        .arg(&ws.tools)
        .env("CARGO_TARGET_DIR", ws.target_dir().join("tools-build"));
    process::run(&mut cmd)?;
    Ok(bin)
}

/// Whether rustup has a nightly toolchain (never installed from here).
fn nightly_present() -> bool {
    Command::new("rustup").args(["run", "nightly", "rustc", "--version"]).output().is_ok_and(|o| o.status.success())
}

/// Fuzzes each of `targets` for `seconds` with optimized builds; fails on the first crash.
pub fn run(ws: &Workspace, targets: &[String], seconds: u32) -> Result<()> {
    run_built(ws, targets, seconds, Build::Optimized)
}

/// The test command's bounded run: every target for [`TIER_SECONDS`], built unoptimized (the seeds and a short
/// exploration catch a regression; `cargo xtask fuzz` is for finding new crashes).
pub fn smoke(ws: &Workspace) -> Result<()> {
    let targets: Vec<String> = TARGETS.iter().map(|t| t.to_string()).collect();
    run_built(ws, &targets, TIER_SECONDS, Build::Dev)
}

fn run_built(ws: &Workspace, targets: &[String], seconds: u32, build_kind: Build) -> Result<()> {
    let cargo_fuzz = ensure_cargo_fuzz(ws)?;
    if !nightly_present() {
        bail!("rustup's nightly toolchain is needed for cargo-fuzz (`rustup toolchain install nightly`)");
    }
    let fuzz_dir = ws.root.join("agent/fuzz");
    let out = ws.target_dir().join("fuzz");
    let build_dir = out.join(if build_kind == Build::Dev { "build-dev" } else { "build" });
    say(format!(
        "building the fuzz targets with nightly ({}; first time ~3-6 min on 2 cores) into {}",
        build_kind.flag(),
        ws.display(&build_dir)
    ));
    let mut build = fuzz_command(&cargo_fuzz, &fuzz_dir);
    build.args(["build", build_kind.flag(), "--target-dir"]).arg(&build_dir);
    process::run(&mut build).context("building the fuzz targets")?;
    for target in targets {
        let corpus = out.join("corpus").join(target);
        let artifacts = out.join("artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        say(format!("{target}: {seconds} s, corpus {}", ws.display(&corpus)));
        let started = Instant::now();
        let mut cmd = fuzz_command(&cargo_fuzz, &fuzz_dir);
        cmd.args(["run", build_kind.flag(), "--target-dir"])
            .arg(&build_dir)
            .arg(target)
            .arg(&corpus)
            .arg(fuzz_dir.join("seeds").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={MAX_LEN}"))
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg("-print_final_stats=1");
        process::run(&mut cmd).with_context(|| {
            format!("fuzz target {target} found a crash; its input is in {}", ws.display(&artifacts))
        })?;
        say(format!("{target}: no crash in {}", progress::seconds(started.elapsed())));
    }
    Ok(())
}

/// `rustup run nightly cargo-fuzz fuzz …` in `agent/fuzz`, without the outer (stable) cargo's variables.
fn fuzz_command(cargo_fuzz: &std::path::Path, fuzz_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly"]).arg(cargo_fuzz).arg("fuzz").current_dir(fuzz_dir);
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k == "CARGO" || k.starts_with("CARGO_") || k.starts_with("RUSTC") || k == "RUSTDOC" || k == "RUSTFLAGS" {
            cmd.env_remove(&key);
        }
    }
    cmd
}
