//! `cargo xtask soak [--minutes N] [--load-seconds S] [--fuzz-seconds F]`: the long hardening runs that do not fit
//! the test command — the churn soak with its RSS slope (`tests/tests/hardening_soak.rs`), the 200-client load for
//! S seconds (`hardening_load`), and F seconds of fuzzing per target. Root, /dev/kvm and BTF, like the host tier.

use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::{fuzz, process, setup, toolchain, workspace::Profile, workspace::Workspace};

/// The flags of `cargo xtask soak`.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// Length of the churn soak.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Length of the 200-client load run.
    #[arg(long, default_value_t = 60)]
    pub load_seconds: u32,
    /// Seconds of fuzzing per target afterwards (0: none).
    #[arg(long, default_value_t = 120)]
    pub fuzz_seconds: u32,
}

pub fn run(ws: &Workspace, args: &SoakArgs) -> Result<ExitCode> {
    setup::setup(ws, &[setup::Group::EbpfBuild, setup::Group::TestTools], setup::Mode::Install)?;
    process::run(toolchain::host_cargo(ws).args(["build", "--workspace"]))?;
    let bins = [("MMUSCOPE_AGENT_BIN", "mmuscope"), ("MMUSCOPE_WORKLOAD_BIN", "mmuscope-workload")];
    let test = |target: &str, ignored: bool, env: (&str, String)| -> Result<()> {
        let mut cmd = toolchain::host_cargo(ws);
        cmd.args(["test", "-p", "mmuscope-tests", "--test", target, "--", "--test-threads=1", "--nocapture"]);
        if ignored {
            cmd.arg("--ignored");
        }
        for (var, name) in bins {
            let path = ws.binary(Profile::Debug, name);
            if !path.is_file() {
                bail!("{} was not built", path.display());
            }
            cmd.env(var, path);
        }
        cmd.env(env.0, env.1);
        process::run(&mut cmd)
    };
    test("hardening_load", false, ("MMUSCOPE_LOAD_SECONDS", args.load_seconds.to_string()))?;
    test("hardening_soak", true, ("MMUSCOPE_SOAK_MINUTES", args.minutes.to_string()))?;
    if args.fuzz_seconds > 0 {
        let targets: Vec<String> = fuzz::TARGETS.iter().map(|t| t.to_string()).collect();
        fuzz::run(ws, &targets, args.fuzz_seconds)?;
    }
    Ok(ExitCode::SUCCESS)
}
