//! `mmuscope-guest-check`: the guest side of the QEMU kernel matrix (`cargo xtask test --tier vm`). Runs as root
//! inside a stock kernel booted by `cargo xtask vm`, for one attach mode:
//!
//! 1. `mmuscope check --json --mode M`: the `brackets` family must be attached in mode M and the mmu_notifier
//!    generation must be the expected one (`--expect-generation`). Where a family's on-demand hooks cannot be
//!    attached on demand in mode M (kprobe mode; fentry on 5.10), the plan without flags must first report it off
//!    with `--probes.keep-attached`, which the check and the agent then get (`plan::off_by_default`);
//! 2. `mmuscope run --mode M`, wait for `/readyz` (an agent that serves HTTP but never becomes ready is a failure,
//!    and the scenarios still run against it, so the failure shows what it counts);
//! 3. per `--scenario` (a `mmuscope-workload` command line, e.g. `kvm-madvise --iterations 1000`): scrape, run the
//!    workload, scrape again, and compare for the workload's attribution cgroup every family its ground truth
//!    describes for this kernel's generation (`families`: brackets and histogram counts by event, secondary-TLB
//!    invalidations by context/scope, double notifications and redundant bytes by kind, avoided doubles, fork
//!    copies, cross-cgroup invalidations by initiator), exactly; in fentry/kprobe modes also `/api/v1/slow` and,
//!    for `kvm-madvise` and `fork-pinned`, `/api/v1/stacks` captured during the workload (`stacks`).
//!
//! Every result is one line `MMUSCOPE-GUEST-RESULT {json}` on stdout (schema in `record`), which the xtask tier
//! collects; everything else is human-readable progress. Exit status 0 only if every record passed.

mod agent;
mod btf;
mod compare;
mod families;
mod needs;
mod plan;
mod record;
mod reference;
mod slow;
mod stacks;
mod subscribers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mmuscope_tests::truth::SecondaryTlbApi;

use record::Record;

#[derive(Debug, Parser)]
#[command(name = "mmuscope-guest-check", about = "Guest side of the QEMU kernel matrix: check, run, compare")]
struct Cli {
    /// Attach mode to force (`fentry`, `kprobe`, `tracepoint`).
    #[arg(long)]
    mode: String,
    /// The `generation` `mmuscope check --json` must report (`invalidate_range`, `arch_invalidate_secondary_tlbs`).
    #[arg(long, value_name = "GENERATION")]
    expect_generation: String,
    /// The kernel predates the BPF helpers of 5.15 (`bpf_task_pt_regs`, `bpf_get_func_ip` in kprobes): `mmuscope
    /// check` must say causes come from the caller hooks only, brackets no hook names are `unknown`, and subscriber
    /// callbacks are not timed.
    #[arg(long)]
    before_5_15_helpers: bool,
    /// A workload command line (repeatable), e.g. `kvm-madvise --iterations 1000`.
    #[arg(long = "scenario", value_name = "ARGS", required = true)]
    scenarios: Vec<String>,
    #[arg(long, default_value = "/usr/bin/mmuscope")]
    agent: PathBuf,
    #[arg(long, default_value = "/usr/bin/mmuscope-workload")]
    workload: PathBuf,
    #[arg(long = "web.listen-address", default_value = "127.0.0.1:9476")]
    listen: String,
    /// Seconds the agent may take to become ready (BTF parsing and attaching under TCG is slow).
    #[arg(long, default_value_t = 240)]
    ready_timeout: u64,
    /// An extra argument for `mmuscope check` and `mmuscope run` (repeatable), e.g. `--agent-arg=--btf=/vm/other-btf`
    /// to demonstrate that a wrong struct layout fails the comparison.
    #[arg(long = "agent-arg", value_name = "ARG", allow_hyphen_values = true)]
    agent_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let kernel = kernel_release();
    let mut records = Vec::new();
    let mut emit = |r: Record| {
        r.print();
        records.push(r.passed());
    };

    let mut agent_args = cli.agent_args.clone();
    agent_args.extend(needs::agent_flags(&cli.scenarios));
    // Families whose on-demand hooks cannot be attached on demand here are off by default: shown so first, then
    // checked and compared with the flag that switches them on.
    let off = plan::off_by_default(&cli.agent, &agent_args, &cli.mode);
    if !off.families.is_empty() {
        agent_args.push(plan::KEEP_ATTACHED.to_owned());
    }
    emit(plan::check(
        &cli.agent,
        &agent_args,
        &cli.mode,
        &cli.expect_generation,
        cli.before_5_15_helpers,
        &kernel,
        off,
    ));
    let api: SecondaryTlbApi = match serde_json::from_value(serde_json::Value::from(cli.expect_generation.as_str())) {
        Ok(api) => api,
        Err(e) => {
            emit(Record::error(&kernel, &cli.mode, "arguments", format!("--expect-generation: {e}")));
            return ExitCode::FAILURE;
        }
    };

    let ready_timeout = Duration::from_secs(cli.ready_timeout);
    match agent::Agent::start(&cli.agent, &agent_args, &cli.mode, &cli.listen, ready_timeout) {
        Ok((agent, readiness)) => {
            if let agent::Readiness::NotReady(why) = readiness {
                emit(Record::error(&kernel, &cli.mode, "agent start", why));
            }
            for scenario in &cli.scenarios {
                emit(compare::scenario(
                    &agent,
                    &cli.workload,
                    scenario,
                    &cli.mode,
                    &kernel,
                    api,
                    cli.before_5_15_helpers,
                ));
            }
            if let Err(e) = agent.stop() {
                emit(Record::error(&kernel, &cli.mode, "agent stop", format!("{e:#}")));
            }
        }
        Err(e) => emit(Record::error(&kernel, &cli.mode, "agent start", format!("{e:#}"))),
    }

    let failed = records.iter().filter(|p| !**p).count();
    println!("mmuscope-guest-check: {kernel} {}: {} record(s), {failed} failed", cli.mode, records.len());
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default()
}
