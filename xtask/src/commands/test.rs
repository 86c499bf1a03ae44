//! `cargo xtask test [--tier T ...] [--fail-fast]`: set up what the selected tiers need, build
//! once if a tier needs the built binaries, run the tiers in order (`==> tier NAME` headers with
//! wall time), then print the summary ending in `N passed, N failed`. Exits non-zero if a tier
//! failed.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    commands::build,
    progress,
    setup::{self, Group, Mode},
    tiers::{
        self, Context, Outcome,
        release::ReleaseAgent,
        summary::{self, Row, Verdict},
    },
    workspace::Workspace,
};

/// The flags of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Tier to run (repeatable or comma-separated; default: all). Tiers run in their fixed order.
    #[arg(long = "tier", value_name = "TIER", value_delimiter = ',', value_parser = tiers::name_parser())]
    pub tiers: Vec<String>,
    /// Stop after the first failed tier (default: run every selected tier).
    #[arg(long)]
    pub fail_fast: bool,
}

pub fn run(ws: &Workspace, args: &TestArgs) -> Result<ExitCode> {
    let selected = tiers::select(&args.tiers);
    let groups: Vec<Group> = selected.iter().flat_map(|t| t.groups).copied().collect();
    warn_if_disk_is_short(ws, selected.len());
    setup::setup(ws, &groups, Mode::Install)?;

    let build_ok = !selected.iter().any(|t| t.needs_build) || build(ws);
    let release = ReleaseAgent::not_started();
    let wants_release = build_ok && selected.iter().any(|t| t.needs_release_agent);
    let ctx = Context { ws, release: &release, ci: mmuscope_ci::in_ci() };
    let mut rows = Vec::new();
    let mut stopped = false;
    for tier in selected {
        if stopped {
            rows.push(Row { tier: tier.name, verdict: Verdict::NotRun, elapsed: Duration::ZERO });
            continue;
        }
        if wants_release && tier.idle_cpu {
            release.start_in_background(ws);
        }
        println!("==> tier {}", tier.name);
        let start = Instant::now();
        let verdict = if tier.needs_build && !build_ok {
            Verdict::Failed("not run: the build failed".into())
        } else {
            match (tier.run)(&ctx) {
                Ok(Outcome::Passed) => Verdict::Passed,
                Ok(Outcome::Skipped(reason)) => Verdict::Skipped(reason),
                Err(err) => Verdict::Failed(format!("{err:#}")),
            }
        };
        let elapsed = start.elapsed();
        let detail = match &verdict {
            Verdict::Failed(why) | Verdict::Skipped(why) => format!(": {why}"),
            _ => String::new(),
        };
        let seconds = progress::seconds(elapsed);
        println!("==> tier {} {} in {seconds} s{detail}", tier.name, verdict.word());
        stopped = args.fail_fast && verdict.is_failure();
        rows.push(Row { tier: tier.name, verdict, elapsed });
    }

    print!("{}", summary::render(&rows));
    let failed = rows.iter().any(|r| r.verdict.is_failure());
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `cargo build --workspace` (debug) for the tiers that use the built binaries.
fn build(ws: &Workspace) -> bool {
    progress::say("test", "building the workspace (debug) for the tiers that run its binaries");
    let start = Instant::now();
    let result = build::build_workspace(ws, false);
    let seconds = progress::seconds(start.elapsed());
    match result {
        Ok(()) => {
            progress::say("test", format!("build passed in {seconds} s"));
            true
        }
        Err(err) => {
            progress::say("test", format!("build FAILED in {seconds} s: {err:#}"));
            false
        }
    }
}

/// What a run of every tier from a clean clone leaves in `target/` and `.tools/` (debug, release and fuzz builds,
/// the kernel cache, root filesystem images, tool installs), rounded up from a measured 7 GiB.
const FULL_RUN_BYTES: u64 = 9 << 30;

/// Says up front when the file system of `target/` has less room than a full run writes: without it, a full disk
/// shows up much later as a tool's `No space left on device` in the middle of a tier. A warning, not an error:
/// caches from earlier runs may make the run fit.
fn warn_if_disk_is_short(ws: &Workspace, tiers: usize) {
    let dir = ws.target_dir();
    let probe = if dir.exists() { dir.clone() } else { ws.root.clone() };
    let Ok(path) = std::ffi::CString::new(probe.as_os_str().as_encoded_bytes()) else { return };
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed out-struct the call fills.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return;
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    let need = if tiers >= tiers::TIERS.len() { FULL_RUN_BYTES } else { FULL_RUN_BYTES / 2 };
    if free < need {
        progress::say(
            "test",
            format!(
                "WARNING: {:.1} GiB free on the file system of {}; a run of every tier from a clean clone writes about \
                 {} GiB (free space, or remove old clones' target/ directories)",
                free as f64 / f64::from(1 << 30),
                probe.display(),
                FULL_RUN_BYTES >> 30,
            ),
        );
    }
}
