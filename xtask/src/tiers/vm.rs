//! Tier `vm`: the kernel matrix. For each kernel (5.10 = the oldest supported, `mm->has_pinned` and before the
//! BPF helpers of 5.15; 6.1 = pre-6.6 generation, 6.12 = post-6.6, and the newest series in sid when apt has it)
//! and each forced attach mode (fentry, kprobe), boot the kernel under QEMU (`crate::vm`) with the agent, the
//! workload generator and the guest checker (`mmuscope-guest-check`, from the tests crate), which runs `mmuscope
//! check --json --mode M`, starts the agent in that mode and compares its counters with the workload's ground truth
//! exactly: every family the truth describes for the kernel's secondary-TLB generation (brackets and histogram
//! counts by event, secondary-TLB invalidations by context/scope, double notifications and redundant bytes by kind,
//! avoided doubles, fork copies, cross-cgroup invalidations, interval-notifier collisions). The kernels and their
//! scenarios are listed in [`matrix`] and chosen per kernel in [`scenarios`]: every kernel runs every scenario
//! ([`FULL`](matrix::FULL); `swap-out` swaps to zram; on 5.10 `thp-split` and `cross-cgroup` take the triggers it
//! has); 5.10, 6.1 and 6.12 (Debian 12's build) also run the test module's ([`MODULE`](matrix::MODULE): the HMM
//! mirror and the secondary-TLB subscriber, built for the kernel, see `vm::kmod`), and sid the RDMA scenarios.
//! In CI every kernel and scenario listed must run: one left out (not offered, module not built, kernel not
//! fetched) fails the tier. The tier prints expected vs observed per kernel × mode × scenario × series, writes
//! `target/vm/results.json` (the README's tested-kernels table is generated from it: `cargo xtask vm table`) and
//! fails on any mismatch.
//!
//! One boot per kernel × mode keeps the modes independent (an oops in one cannot spoil the other). The boots run
//! side by side, one per host CPU (`MMUSCOPE_VM_JOBS=N` to choose): each guest has one vCPU, which TCG runs on one
//! host thread, so two guests on two CPUs take about the time of one each; their live output is prefixed with
//! kernel and mode. A kernel's boots start as soon as it is fetched and its module built, while the next kernel
//! downloads (`pool`), the kernels with the most scenarios first.
//! The agent is the release build (as it ships; built here when not current), the workload and the checker the debug
//! builds `cargo xtask test` just made; `MMUSCOPE_AGENT_BIN`,
//! `MMUSCOPE_WORKLOAD_BIN` and `MMUSCOPE_GUEST_CHECK_BIN` override them. For development:
//! `MMUSCOPE_VM_KERNELS=6.1,sid` (every kernel named there is required), `MMUSCOPE_VM_MODES=kprobe`,
//! `MMUSCOPE_VM_SCENARIOS='kvm-madvise --iterations 10;…'`. To show that the tier catches a wrong
//! struct layout, hand the agent another kernel's BTF: `MMUSCOPE_VM_FILES=<btf>:/vm/btf` (extra
//! `HOST:GUEST` files, comma-separated) and `MMUSCOPE_VM_AGENT_ARGS='--btf /vm/btf'` (extra
//! arguments of `mmuscope check` and `mmuscope run` in the guest). A run with any of these
//! `MMUSCOPE_VM_*` overrides writes `target/vm/results-custom.json` instead, so the README table
//! only ever shows the full matrix.

mod matrix;
mod pool;
mod scenarios;

use std::{
    env,
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};

use self::{
    matrix::{KERNELS, MODES},
    scenarios::{list_from_env, module_files, offered_scenarios, scenarios_for},
};
use super::{Context, Outcome};
use crate::{
    progress,
    vm::{
        self, GuestOptions,
        initramfs::GuestFile,
        kernels::CachedKernel,
        qemu::BootHung,
        resolve::{Request, Series},
        results::{GuestRecord, KernelInfo, Results, RunResult, Unavailable},
        table,
    },
    workspace::{Profile, Workspace},
};

/// The first generation whose secondary-TLB hook is `arch_invalidate_secondary_tlbs`.
const SECONDARY_TLBS_SINCE: Series = Series { major: 6, minor: 6 };
/// The series that brought `bpf_task_pt_regs` and `bpf_get_func_ip` in kprobes: before it the agent reads causes
/// from its caller hooks only and times no subscriber callback (the guest check expects exactly that).
const HELPERS_5_15: Series = Series { major: 5, minor: 15 };
/// Hard limit per boot (boot ~5 s, debug agent start ~20–30 s under TCG, workloads). 5.10 takes longest: every
/// scenario and the module's, the plan checked without and with `--probes.keep-attached`, the trace reference armed
/// around each scenario: ~310 s in a quiet CI with 420 s as the limit, then just over 420 s once the reader-wait and
/// -EBUSY references and the arming check came.
const BOOT_LIMIT: Duration = Duration::from_secs(600);
const GUEST_MEMORY_MIB: u32 = 2048;
/// One vCPU: with two, multi-threaded TCG occasionally leaves a vCPU looping on a stale int3
/// while KVM's static-key patching (preempt notifiers, at KVM_CREATE_VM) races kprobe text
/// patching (seen: 6.1 kprobe soft lockup in kvm_destroy_vm, 7.2 kprobe "Oops: int3" in
/// __schedule). Nothing in the scenarios needs a second CPU.
const GUEST_CPUS: u32 = 1;
/// At most this many guests at once by default (each takes [`GUEST_MEMORY_MIB`] and a host CPU).
const MAX_PARALLEL: usize = 4;

/// Variables that change what the tier runs (see the module docs).
const OVERRIDES: &[&str] = &[
    "MMUSCOPE_VM_KERNELS",
    "MMUSCOPE_VM_MODES",
    "MMUSCOPE_VM_SCENARIOS",
    "MMUSCOPE_VM_FILES",
    "MMUSCOPE_VM_AGENT_ARGS",
];

/// Guest path of the HMM mirror test module (the workload's `mirror-*` scenarios load it from there).
pub(crate) const MIRROR_MODULE: &str = "/usr/lib/mmuscope/mmuscope_mirror.ko";

/// Guest paths of the binaries, and where they come from on the host: the agent as it ships (the release build, which
/// the `ship` and `fleet` tiers package; also four times quicker to start under TCG than the debug build), the tests'
/// binaries from the debug build `cargo xtask test` just made.
const BINARIES: &[(&str, &str, &str, Profile)] = &[
    ("mmuscope", "/usr/bin/mmuscope", "MMUSCOPE_AGENT_BIN", Profile::Release),
    ("mmuscope-workload", "/usr/bin/mmuscope-workload", "MMUSCOPE_WORKLOAD_BIN", Profile::Debug),
    ("mmuscope-guest-check", "/usr/bin/mmuscope-guest-check", "MMUSCOPE_GUEST_CHECK_BIN", Profile::Debug),
];

pub fn run(ctx: &Context) -> Result<Outcome> {
    let ws = ctx.ws;
    let started = Instant::now();
    let mut files = binaries(ctx)?;
    let offered = offered_scenarios(&files[1].host)?;
    for extra in list_from_env("MMUSCOPE_VM_FILES", ',').unwrap_or_default() {
        files.push(extra.parse().context("MMUSCOPE_VM_FILES")?);
    }
    let agent_args: Vec<String> = env::var("MMUSCOPE_VM_AGENT_ARGS")
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    if !agent_args.is_empty() {
        say(format!("extra agent arguments (MMUSCOPE_VM_AGENT_ARGS): {}", agent_args.join(" ")));
    }
    let kernels = list_from_env("MMUSCOPE_VM_KERNELS", ',')
        .map(|names| names.into_iter().map(|n| (n, true)).collect::<Vec<_>>())
        .unwrap_or_else(|| KERNELS.iter().map(|(k, required, _, _)| (k.to_string(), *required)).collect());
    let modes =
        list_from_env("MMUSCOPE_VM_MODES", ',').unwrap_or_else(|| MODES.iter().map(|m| m.to_string()).collect());

    let mut results = Results { schema_version: vm::results::SCHEMA_VERSION, ..Results::default() };
    let mut failures = Vec::new();
    // Each kernel is fetched and its test module built on this thread (downloads and compilers, one at a time) while
    // the boots of the kernels already fetched run side by side. Kernels with the most scenarios go first, so that
    // the last boots to start are short ones.
    let mut planned = Vec::new();
    for (name, required) in &kernels {
        let (scenarios, missing) = scenarios_for(name, &offered)?;
        if ctx.ci && !missing.is_empty() {
            failures.push(format!(
                "kernel {name}: scenarios listed but not offered by the workload: {}",
                missing.join("; ")
            ));
        }
        planned.push((name, *required, scenarios));
    }
    planned.sort_by_key(|(_, _, scenarios)| std::cmp::Reverse(scenarios.len()));
    let parallel = parallel_boots(planned.len() * modes.len())?;
    say(format!("up to {} boot(s), {parallel} at a time (MMUSCOPE_VM_JOBS)", planned.len() * modes.len()));
    let runs = pool::run_while_preparing(
        parallel,
        |hand_over: &mut dyn FnMut(Boot)| {
            for (name, required, mut scenarios) in planned {
                let kernel = match name.parse::<Request>().and_then(|r| vm::kernels::fetch(ws, &r, false)) {
                    Ok(k) => k,
                    Err(err) => {
                        let reason = format!("{err:#}");
                        say(format!("kernel {name} unavailable: {reason}"));
                        // A best-effort kernel (sid) may be missing on a developer's machine; in CI every kernel of
                        // the matrix is a prerequisite, and one left out would pass a tier that tested less than it
                        // lists.
                        if required || ctx.ci {
                            failures.push(format!("kernel {name} could not be fetched: {reason}"));
                        }
                        results.unavailable.push(Unavailable { kernel: name.clone(), reason });
                        continue;
                    }
                };
                let (kernel_files, notes) = module_files(ws, &kernel, &mut scenarios);
                if ctx.ci && !notes.is_empty() {
                    // Listed scenarios left out: the tier would pass having tested less than it lists.
                    failures.push(format!("kernel {name}: {}", notes.join("; ")));
                }
                if scenarios.is_empty() {
                    // Every scenario of this kernel needed a module its headers cannot build here: nothing to boot.
                    let reason = notes.join("; ");
                    say(format!("kernel {name}: no scenario left, not booted: {reason}"));
                    results.unavailable.push(Unavailable { kernel: name.clone(), reason });
                    continue;
                }
                let files: Vec<GuestFile> = files.iter().cloned().chain(kernel_files).collect();
                for mode in &modes {
                    hand_over(Boot {
                        kernel: kernel.clone(),
                        mode: mode.clone(),
                        files: files.clone(),
                        scenarios: scenarios.clone(),
                        notes: notes.clone(),
                    });
                }
            }
        },
        |boot| {
            let mut run = run_one(ws, &boot, &agent_args, parallel > 1);
            run.notes.extend(boot.notes);
            run
        },
    );
    for run in runs {
        failures.extend(run.failures());
        results.runs.push(run);
    }
    let mut timings: Vec<(String, f64)> = Vec::new();
    for run in &results.runs {
        match timings.iter_mut().find(|(release, _)| *release == run.kernel.release) {
            Some((_, seconds)) => *seconds += run.wall_seconds,
            None => timings.push((run.kernel.release.clone(), run.wall_seconds)),
        }
    }
    let timings: Vec<String> = timings.iter().map(|(release, s)| format!("{release} {s:.1} s")).collect();

    results.wall_seconds = started.elapsed().as_secs_f64();
    results.finished_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let custom = OVERRIDES.iter().any(|var| env::var_os(var).is_some());
    let path = if custom { vm::results::custom_path(ws) } else { vm::results::path(ws) };
    results.write(&path)?;
    println!("\n{}", table::render(&results));
    say(format!(
        "guest time per kernel (its boots added up): {}; wall time {:.1} s; results in {}",
        timings.join(", "),
        results.wall_seconds,
        ws.display(&path)
    ));
    if !failures.is_empty() {
        bail!("{} problem(s) in the kernel matrix:\n  - {}", failures.len(), failures.join("\n  - "));
    }
    Ok(Outcome::Passed)
}

/// One boot of the matrix: a kernel, the mode the agent is forced into, and what the guest runs.
struct Boot {
    kernel: CachedKernel,
    mode: String,
    files: Vec<GuestFile>,
    scenarios: Vec<String>,
    /// Said in the run's record (e.g. scenarios left out).
    notes: Vec<String>,
}

/// How many guests boot at once: `MMUSCOPE_VM_JOBS`, or one per CPU of this machine (each guest has one vCPU, which
/// TCG runs on one host thread), at most [`MAX_PARALLEL`] and never more than there are boots.
fn parallel_boots(boots: usize) -> Result<usize> {
    let wanted = match env::var("MMUSCOPE_VM_JOBS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => bail!("MMUSCOPE_VM_JOBS={v:?}: expected a number of guests above 0"),
        },
        Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()).min(MAX_PARALLEL),
    };
    Ok(wanted.min(boots.max(1)))
}

/// One boot: `kernel` with the agent forced into `mode`.
fn run_one(ws: &Workspace, boot: &Boot, agent_args: &[String], side_by_side: bool) -> RunResult {
    let Boot { kernel, mode, files, scenarios, .. } = boot;
    let expected_generation = generation_for(kernel);
    say(format!("{} × {mode}: expecting generation {expected_generation}", kernel.meta.release));
    let mut command: Vec<String> =
        ["mmuscope-guest-check", "--mode", mode, "--expect-generation", expected_generation].map(String::from).into();
    if kernel.series().is_some_and(|s| s < HELPERS_5_15) {
        command.push("--before-5-15-helpers".into());
    }
    for s in scenarios {
        command.extend(["--scenario".to_string(), s.clone()]);
    }
    command.extend(agent_args.iter().map(|a| format!("--agent-arg={a}")));
    let echo = if side_by_side { format!("guest {} {mode}|", kernel.meta.release) } else { "guest|".to_string() };
    let opts = GuestOptions {
        label: mode.to_string(),
        memory_mib: GUEST_MEMORY_MIB,
        cpus: GUEST_CPUS,
        timeout: BOOT_LIMIT,
        echo: Some(echo),
    };
    let started = Instant::now();
    let mut run = RunResult {
        kernel: KernelInfo::from(kernel),
        mode: mode.to_string(),
        wall_seconds: 0.0,
        check: None,
        scenarios: Vec::new(),
        errors: Vec::new(),
        notes: Vec::new(),
    };
    let mut attempt = vm::run_in_guest(ws, kernel, files, &command, &opts);
    if let Some(hung) = attempt.as_ref().err().and_then(|e| e.downcast_ref::<BootHung>()) {
        // A boot that never reached /init tests nothing of ours: one retry, said out loud.
        say(format!("{hung}\n==> retrying the boot once"));
        run.notes.push(format!("boot hung once (no /init after {:.0} s); retried", hung.waited.as_secs_f64()));
        attempt = vm::run_in_guest(ws, kernel, files, &command, &opts);
    } else if let Some(why) = attempt.as_ref().err().map(|e| format!("{e:#}")).filter(|m| unrelated_panic(m)) {
        // TCG occasionally trips over a text-patching site (seen once in ~70 boots: an int3
        // Oops in __schedule of a kworker on 7.2 with kprobes armed). A crash whose trace has no
        // BPF program frame is retried once and recorded; one inside our programs never is.
        say(format!("{why}\n==> guest kernel crashed outside any BPF program; retrying the boot once"));
        // Kprobes are armed in every mode (the agent's in kprobe mode, the guest check's reference counter around
        // every scenario in all modes), so the crash may be ours (text patching at an attach point) even without a
        // `bpf_prog_` frame: the retry still runs, for its figures, but the run fails.
        run.errors.push(format!("guest kernel panic with kprobes armed (retried once for the figures): {why}"));
        attempt = vm::run_in_guest(ws, kernel, files, &command, &opts);
    }
    match attempt {
        Ok(done) => match vm::results::parse_records(&done.output) {
            Ok(records) => {
                collect(&mut run, records, expected_generation);
                if done.status != 0 && run.failures().is_empty() {
                    run.errors.push(format!("the guest checker exited with status {}", done.status));
                }
            }
            Err(err) => run.errors.push(format!("{err:#}")),
        },
        Err(err) => run.errors.push(format!("{err:#}")),
    }
    run.wall_seconds = started.elapsed().as_secs_f64();
    let verdict = if run.passed() { "passed" } else { "FAILED" };
    say(format!("{} × {mode}: {verdict} in {:.1} s", kernel.meta.release, run.wall_seconds));
    run
}

/// A guest kernel panic whose console tail shows no BPF program frame (`bpf_prog_…`).
fn unrelated_panic(message: &str) -> bool {
    message.contains("kernel panic") && !message.contains("bpf_prog_") && !message.contains("bpf_trampoline")
}

/// Files the records into `run`, re-checking what the guest judged.
fn collect(run: &mut RunResult, records: Vec<GuestRecord>, expected_generation: &str) {
    for record in records {
        match record {
            GuestRecord::Check(c) => {
                if c.pass && c.generation.as_deref() != Some(expected_generation) {
                    run.errors.push(format!("check passed with generation {:?}", c.generation));
                }
                run.check = Some(c);
            }
            GuestRecord::Scenario(s) => {
                let unequal = s.comparisons.iter().any(|c| c.pass != c.holds());
                if s.pass && (s.comparisons.is_empty() || unequal || s.comparisons.iter().any(|c| !c.pass)) {
                    run.errors.push(format!("{}: the checker passed unequal or no comparisons", s.scenario));
                }
                run.scenarios.push(s);
            }
            GuestRecord::Error(e) => run.errors.push(format!("{}: {}", e.stage, e.message)),
        }
    }
}

/// `invalidate_range` before 6.6, `arch_invalidate_secondary_tlbs` from 6.6 on.
fn generation_for(kernel: &CachedKernel) -> &'static str {
    match kernel.series() {
        Some(s) if s < SECONDARY_TLBS_SINCE => "invalidate_range",
        _ => "arch_invalidate_secondary_tlbs",
    }
}

/// The three binaries ([`BINARIES`]), unless overridden; the release build of the agent is made here if needed.
fn binaries(ctx: &Context) -> Result<Vec<GuestFile>> {
    let ws = ctx.ws;
    BINARIES
        .iter()
        .map(|(name, guest, var, profile)| {
            let host = match (env::var_os(var), profile) {
                (Some(path), _) => PathBuf::from(path),
                (None, Profile::Release) => ctx.release.path(ws)?,
                (None, Profile::Debug) => ws.binary(Profile::Debug, name),
            };
            if !host.is_file() {
                bail!("{} is missing: build the workspace (`cargo build --workspace`) or set {var}", host.display());
            }
            Ok(GuestFile { host, guest: PathBuf::from(guest) })
        })
        .collect()
}

fn say(message: impl std::fmt::Display) {
    progress::say("vm", message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_by_series() {
        let k = |series: &str| CachedKernel {
            dir: PathBuf::new(),
            meta: vm::kernels::KernelMeta {
                release: String::new(),
                series: series.into(),
                package: String::new(),
                version: String::new(),
                suite: String::new(),
                archive: String::new(),
                modules: vec![],
                optional_modules: vec![],
                top_modules: vec![],
                rootfs_modules: vec![],
                fetched_at: 0,
            },
        };
        assert_eq!(generation_for(&k("6.1")), "invalidate_range");
        assert_eq!(generation_for(&k("6.5")), "invalidate_range");
        assert_eq!(generation_for(&k("6.6")), "arch_invalidate_secondary_tlbs");
        assert_eq!(generation_for(&k("6.12")), "arch_invalidate_secondary_tlbs");
        assert_eq!(generation_for(&k("7.2")), "arch_invalidate_secondary_tlbs");
    }
}

#[cfg(test)]
mod panic_tests {
    use super::unrelated_panic;

    #[test]
    fn only_panics_outside_bpf_programs_are_retried() {
        let ours =
            "guest 7.2: kernel panic after 30.1 s\n Call Trace:\n bpf_prog_6deef7357e7b4530_bracket_start_k+0x2a\n";
        let theirs = "guest 7.2: kernel panic after 30.1 s\n Oops: int3\n RIP: __schedule+0x38f\n worker_thread\n";
        assert!(!unrelated_panic(ours));
        assert!(unrelated_panic(theirs));
        assert!(!unrelated_panic("guest 6.1: command timed out"));
    }
}
