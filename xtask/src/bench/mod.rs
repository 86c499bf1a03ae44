//! `cargo xtask bench [NAME…] [--quick] [--update]`: benchmarks, not tests. Each benchmark drives the release
//! binaries (the agent, the workload's `bench-*` modes, the `mmuscope-bench-fixture` helper, bpftrace, wrk), writes
//! `target/bench/<name>.json`, prints its tables, and with `--update` rewrites its generated block in BENCHMARKS.md.
//! `--quick` is the harness smoke the `host` tier runs: debug binaries, tiny counts, one run, and only structural
//! checks of the result (no timing is ever asserted).
//!
//! The machine is shared and noisy, so every benchmark interleaves its A/B variants within a round, pins the measured
//! process to one CPU and the agent to the other (taskset), and reports median and min–max over the rounds, with
//! ratios taken within a round. Files: one per benchmark (`madvise`, `fork`, `agent`, `unrelated`, `stacks`, `guests`), plus
//! `procs` (processes), `fixture`, `bpftrace` (the equivalent script), `bpfstats` (per-program run time), `http`,
//! `stats`, `machine`, `report` (JSON and the Markdown block).

mod agent;
mod bpfstats;
mod bpftrace;
mod fixture;
mod fork;
mod guests;
mod http;
mod machine;
mod madvise;
mod procs;
mod report;
mod stacks;
mod stats;
mod unrelated;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, builder::PossibleValuesParser};

use crate::{
    privilege::Privilege,
    process, progress,
    setup::{self, Group, Mode},
    toolchain,
    workspace::{Profile, Workspace},
};

#[derive(Args)]
pub struct BenchArgs {
    /// Benchmarks to run (default: all).
    #[arg(value_name = "NAME", value_parser = name_parser())]
    pub names: Vec<String>,
    /// Harness smoke: debug binaries, tiny counts, one run; results go to target/bench/quick/ and mean nothing.
    #[arg(long)]
    pub quick: bool,
    /// Rewrite each benchmark's generated block in BENCHMARKS.md (ignored with --quick).
    #[arg(long)]
    pub update: bool,
    /// Measure nothing: rewrite the generated blocks from the last full run's target/bench/NAME.json.
    #[arg(long, conflicts_with_all = ["quick", "update", "runs"])]
    pub from_json: bool,
    /// Rounds per benchmark [default: 5, 7 for unrelated; 1 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(usize))]
    pub runs: Option<usize>,
}

pub struct Benchmark {
    pub name: &'static str,
    pub about: &'static str,
    /// Rounds without `--runs` (one with `--quick`).
    rounds: usize,
    run: fn(&Bench) -> Result<report::Report>,
}

pub const BENCHMARKS: &[Benchmark] = &[
    Benchmark {
        name: "madvise",
        about: "added ns per invalidation: none, empty-program floor, mmuscope, bpftrace (tracepoint mode)",
        rounds: 5,
        run: madvise::run,
    },
    Benchmark {
        name: "fork",
        about: "fork() of 64 MiB pinned by io_uring, with and without the agent",
        rounds: 5,
        run: fork::run,
    },
    Benchmark {
        name: "agent",
        about: "agent RSS/CPU idle and at 1 scrape/s with 0/1k/10k cgroups, /metrics p50/p99 under wrk, ready time",
        rounds: 5,
        run: agent::run,
    },
    Benchmark {
        name: "unrelated",
        about: "slowdown of processes with no notifier and no pinned page (syscall, fault, fork, mmap) with the agent",
        // Slowdowns of a few per cent need more rounds than the others to stand out of the noise.
        rounds: 7,
        run: unrelated::run,
    },
    Benchmark {
        name: "stacks",
        about: "the madvise loop with the agent and no stack request, and while a request captures (tracepoint mode)",
        rounds: 5,
        run: stacks::run,
    },
    Benchmark {
        name: "guests",
        about: "madvise and unrelated loops' slowdown with the agent in fentry and kprobe modes, QEMU guests 6.1 and \
                6.12 (ratios)",
        rounds: 5,
        run: guests::run,
    },
];

/// Packages the benchmarks call besides the build: bpftrace, wrk, bpftool (ebpf-build), QEMU (vm).
/// (wrk comes with the test tools, which the hardening load test shares.)
pub const GROUPS: &[Group] = &[Group::EbpfBuild, Group::Bench, Group::TestTools, Group::Vm];

pub fn name_parser() -> PossibleValuesParser {
    PossibleValuesParser::new(BENCHMARKS.iter().map(|b| clap::builder::PossibleValue::new(b.name).help(b.about)))
}

/// Everything a benchmark needs.
pub struct Bench<'a> {
    pub ws: &'a Workspace,
    pub quick: bool,
    pub runs: usize,
    /// The CPU the measured process is pinned to; the agent and the attached tools get `other_cpu`.
    pub cpu: usize,
    pub other_cpu: usize,
    pub bins: Bins,
    name: &'static str,
    /// Rounds that started while other jobs' tracing eBPF programs were loaded (see `await_quiet_host`).
    unquiet_rounds: Cell<usize>,
}

/// How long a round waits for other jobs' tracing eBPF programs to go.
const QUIET_WAIT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct Bins {
    pub agent: PathBuf,
    pub workload: PathBuf,
    pub fixture: PathBuf,
    pub bpf_object: PathBuf,
}

impl Bench<'_> {
    pub fn out_dir(&self) -> PathBuf {
        self.ws.target_dir().join(if self.quick { "bench/quick" } else { "bench" })
    }

    /// Called before each round, when none of the benchmark's own programs are loaded: waits up to [`QUIET_WAIT`]
    /// for other jobs' tracing eBPF programs (another agent, a test tier's bpftrace) to go, since their hooks would be
    /// in every variant, `none` included, and counts the round if they stay. Not with `--quick`.
    pub fn await_quiet_host(&self) {
        if self.quick {
            return;
        }
        let deadline = Instant::now() + QUIET_WAIT;
        let mut said = false;
        while let Some(p) = machine::tracing_programs().filter(|p| !p.is_empty()) {
            if Instant::now() > deadline {
                self.say(format!(
                    "other jobs' tracing eBPF programs still loaded ({}); measuring anyway",
                    p.join(", ")
                ));
                self.unquiet_rounds.set(self.unquiet_rounds.get() + 1);
                return;
            }
            if !said {
                self.say(format!(
                    "waiting up to {QUIET_WAIT:?} for other jobs' tracing eBPF programs to go: {}",
                    p.join(", ")
                ));
                said = true;
            }
            std::thread::sleep(Duration::from_secs(5));
        }
    }

    /// One round of interleaved runs: waits for a quiet host, runs `measure` on each of `variants` in an order
    /// rotated by `round` (no variant always runs first), then on the first variant (the baseline) again, so that the
    /// round's two baseline runs bracket the others and slow drifts of the machine's load cancel. Returns the runs by
    /// variant and the closing baseline run.
    pub fn interleaved_round<T>(
        &self,
        round: usize,
        variants: &[&'static str],
        mut measure: impl FnMut(&'static str) -> Result<T>,
    ) -> Result<(BTreeMap<&'static str, T>, T)> {
        self.await_quiet_host();
        let mut runs = BTreeMap::new();
        for i in 0..variants.len() {
            let v = variants[(i + round) % variants.len()];
            runs.insert(v, measure(v)?);
        }
        let closing = measure(variants[0])?;
        Ok((runs, closing))
    }

    pub fn say(&self, msg: String) {
        progress::say(&format!("bench {}", self.name), msg);
    }

    pub fn stats(&self, raw: &BTreeMap<String, Vec<f64>>, key: &str) -> Result<stats::Stats> {
        raw.get(key).and_then(|v| stats::Stats::of(v)).with_context(|| format!("no finite samples for {key}"))
    }

    pub fn report(
        &self,
        name: &str,
        title: &str,
        tables: Vec<report::Table>,
        targets: Vec<report::Target>,
        samples: BTreeMap<String, Vec<f64>>,
    ) -> report::Report {
        report::Report {
            name: name.into(),
            title: title.into(),
            command: format!("sudo -E cargo xtask bench {name} --update"),
            quick: self.quick,
            machine: machine::Machine::now(),
            tables,
            targets,
            notes: vec![],
            samples,
        }
    }
}

pub fn run(ws: &Workspace, args: &BenchArgs) -> Result<ExitCode> {
    let privilege = Privilege::current();
    if !privilege.is_root() {
        bail!("benchmarks load eBPF programs and create cgroups: run as root (`sudo -E cargo xtask bench`)");
    }
    if args.from_json {
        update_from_json(ws, &args.names)?;
        return Ok(ExitCode::SUCCESS);
    }
    setup::setup(ws, GROUPS, Mode::Install)?;
    run_selected(ws, args)?;
    Ok(ExitCode::SUCCESS)
}

/// Rewrites the generated blocks of BENCHMARKS.md from the JSON of the last full runs, e.g. after a run without
/// `--update` turned out to be the one to keep.
fn update_from_json(ws: &Workspace, names: &[String]) -> Result<()> {
    let path = ws.root.join("BENCHMARKS.md");
    let mut doc = std::fs::read_to_string(&path).with_context(|| format!("reading {}", ws.display(&path)))?;
    for benchmark in BENCHMARKS.iter().filter(|b| names.is_empty() || names.iter().any(|n| n == b.name)) {
        let json = ws.target_dir().join("bench").join(format!("{}.json", benchmark.name));
        let Ok(text) = std::fs::read_to_string(&json) else {
            eprintln!("bench {}: no {} (run it first); its block is left as it is", benchmark.name, ws.display(&json));
            continue;
        };
        let report: report::Report =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", ws.display(&json)))?;
        report.check()?;
        doc = report::replace_block(&doc, benchmark.name, &report.markdown());
        println!("==> mmuscope bench {}: block rewritten from {}", benchmark.name, ws.display(&json));
    }
    std::fs::write(&path, doc)?;
    Ok(())
}

/// The `--quick` smoke of the host benchmarks, for the `host` tier: fails only if the harness breaks or produces a
/// malformed result. (`guests` boots QEMU; the `vm` tier covers those kernels.)
pub fn smoke(ws: &Workspace) -> Result<()> {
    let names = ["madvise", "fork", "agent", "unrelated", "stacks"].map(String::from).to_vec();
    run_selected(ws, &BenchArgs { names, quick: true, update: false, from_json: false, runs: None })
}

fn run_selected(ws: &Workspace, args: &BenchArgs) -> Result<()> {
    let selected: Vec<&Benchmark> =
        BENCHMARKS.iter().filter(|b| args.names.is_empty() || args.names.iter().any(|n| n == b.name)).collect();
    let profile = if args.quick { Profile::Debug } else { Profile::Release };
    let bins = build_bins(ws, profile)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut failed = Vec::new();
    for benchmark in selected {
        let runs = args.runs.unwrap_or(if args.quick { 1 } else { benchmark.rounds });
        let b = Bench {
            ws,
            quick: args.quick,
            runs,
            cpu: cpus.saturating_sub(1),
            other_cpu: 0,
            bins: bins.clone(),
            name: benchmark.name,
            unquiet_rounds: Cell::new(0),
        };
        let mut machine = machine::Machine::now();
        b.say(format!("start; {} runs; load average {}", runs, machine.load_before));
        let mut report = match (benchmark.run)(&b) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("bench {}: {e:#}", benchmark.name);
                failed.push(benchmark.name);
                continue;
            }
        };
        machine.finish();
        report.machine = machine;
        if b.unquiet_rounds.get() > 0 {
            report.notes.push(format!(
                "{} of {runs} rounds started with other jobs' tracing eBPF programs loaded (after waiting {QUIET_WAIT:?} \
                 for them to go): their hooks were in every variant, `none` included",
                b.unquiet_rounds.get()
            ));
        }
        report.check()?;
        let json = b.out_dir().join(format!("{}.json", benchmark.name));
        report.write_json(&json)?;
        println!("\n{}", report.markdown());
        b.say(format!("wrote {}", ws.display(&json)));
        if args.update && !args.quick {
            let path = ws.root.join("BENCHMARKS.md");
            let doc = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n".into());
            std::fs::write(&path, report::replace_block(&doc, benchmark.name, &report.markdown()))?;
            b.say("updated BENCHMARKS.md".into());
        }
    }
    if !failed.is_empty() {
        bail!("benchmarks failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Builds the agent and the tests crate's binaries with `profile`.
fn build_bins(ws: &Workspace, profile: Profile) -> Result<Bins> {
    let mut cargo = toolchain::host_cargo(ws);
    cargo.args(["build", "-p", "mmuscope", "-p", "mmuscope-tests", "--bins"]);
    if matches!(profile, Profile::Release) {
        cargo.arg("--release");
    }
    process::run(&mut cargo)?;
    let bins = Bins {
        agent: ws.binary(profile, "mmuscope"),
        workload: ws.binary(profile, "mmuscope-workload"),
        fixture: ws.binary(profile, "mmuscope-bench-fixture"),
        bpf_object: ws.bpf_target_dir().join("bpfel-unknown-none/release/mmuscope"),
    };
    for p in [&bins.agent, &bins.workload, &bins.fixture, &bins.bpf_object] {
        if !p.is_file() {
            bail!("{} was not built", p.display());
        }
    }
    Ok(bins)
}
