//! `unrelated`: what the agent costs processes it has nothing to report about (issue 21: pay only where there is
//! something to see). The workload's `bench-unrelated` loops — a system call, an anonymous fault, a fork of 256 MiB,
//! an mmap/munmap, a copy-on-write fault — run in a process with no notifier and no pinned page, pinned to one CPU, without the agent and
//! with it (`mmuscope run --mode tracepoint` on the other CPU). Each round runs both variants in a rotated order plus
//! a closing `none`, every loop in each; a loop's slowdown is the agent's run over the mean of the round's two `none`
//! runs, and the two `none` runs against each other show the noise the slowdown has to stand out of.
//! A separate pass with `kernel.bpf_stats_enabled` shows which of the agent's programs each loop makes run, and
//! their time per operation.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::procs::{self, Agent, PerOp};
use super::report::{Report, Table, Target};
use super::{Bench, bpfstats, stats};

/// One loop of `mmuscope-workload bench-unrelated`.
pub struct Loop {
    pub name: &'static str,
    /// One operation, for the tables.
    pub what: &'static str,
    /// Operations per run: about a second of CPU each on the host.
    iterations: u64,
    /// With `--quick` (the harness smoke).
    pub quick: u64,
    /// In a QEMU guest (`guests`; TCG emulates every instruction).
    pub guest: u64,
    /// Shown per op in this unit: (name, ns per unit).
    unit: (&'static str, f64),
}

pub const LOOPS: [Loop; 5] = [
    Loop {
        name: "syscall",
        what: "getppid()",
        iterations: 5_000_000,
        quick: 20_000,
        guest: 100_000,
        unit: ("ns", 1.0),
    },
    Loop {
        name: "fault",
        what: "madvise(MADV_DONTNEED) + write fault, one page",
        iterations: 500_000,
        quick: 2_000,
        guest: 5_000,
        unit: ("ns", 1.0),
    },
    Loop {
        name: "fork",
        what: "fork() of 256 MiB written, unpinned",
        iterations: 200,
        quick: 2,
        guest: 10,
        unit: ("µs", 1e3),
    },
    Loop {
        name: "mmap",
        what: "mmap + write + munmap, one page",
        iterations: 300_000,
        quick: 2_000,
        guest: 5_000,
        unit: ("ns", 1.0),
    },
    Loop {
        name: "cow",
        what: "write to a page shared copy-on-write with a child (forks untimed)",
        iterations: 300_000,
        quick: 2_000,
        guest: 5_000,
        unit: ("ns", 1.0),
    },
];

const VARIANTS: [&str; 2] = ["none", "agent"];

pub fn run(b: &Bench) -> Result<Report> {
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..b.runs {
        let (runs, closing) = b.interleaved_round(round, &VARIANTS, |v| every_loop(b, v == "agent"))?;
        let mut said = Vec::new();
        for (l, lp) in LOOPS.iter().enumerate() {
            for (metric, m) in [("cpu", (|r: &PerOp| r.cpu) as fn(&PerOp) -> f64), ("wall", |r: &PerOp| r.wall)] {
                let (none, again, agent) = (m(&runs["none"][l]), m(&closing[l]), m(&runs["agent"][l]));
                let key = |what: &str| format!("{metric}_{}_{what}", lp.name);
                raw.entry(key("none")).or_default().extend([none, again]);
                raw.entry(key("agent")).or_default().push(agent);
                raw.entry(key("ratio")).or_default().push(slowdown(none, agent, again));
                raw.entry(key("noise")).or_default().push(again / none);
            }
            let cpu = slowdown(runs["none"][l].cpu, runs["agent"][l].cpu, closing[l].cpu);
            said.push(format!("{} {cpu:.3}", lp.name));
        }
        b.say(format!("round {}/{}: CPU time with / without the agent: {}", round + 1, b.runs, said.join(", ")));
    }
    let profile = profile_pass(b)?;
    build_report(b, raw, profile)
}

/// The run with the agent over the mean of the round's two runs without it.
fn slowdown(none: f64, agent: f64, again: f64) -> f64 {
    agent / ((none + again) / 2.0)
}

fn iterations(b: &Bench, l: &Loop) -> u64 {
    if b.quick { l.quick } else { l.iterations }
}

/// One run of every loop, with the agent attached or not.
fn every_loop(b: &Bench, with_agent: bool) -> Result<Vec<PerOp>> {
    let agent = if with_agent { Some(Agent::start(&b.bins.agent, b.other_cpu, &[])?) } else { None };
    if agent.is_some() {
        settle(b);
    }
    let runs = LOOPS.iter().map(|l| run_loop(b, l, iterations(b, l)).and_then(|v| PerOp::of(&v))).collect();
    if let Some(agent) = agent {
        drop(agent);
        settle(b);
    }
    runs
}

/// After the agent started or stopped, lets the kernel's side of it finish before the next timed run: detaching frees
/// programs and maps through RCU callbacks and workqueues that run on every CPU, the measured one included (in a
/// first measurement, the `none` run right after the agent stopped was the slower `none` of its round in every such
/// round). Start-up work after `/readyz` (the first sweep) stays on the agent's CPU, but the pause is cheap.
pub(super) fn settle(b: &Bench) {
    if !b.quick {
        std::thread::sleep(SETTLE);
    }
}

const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

fn run_loop(b: &Bench, l: &Loop, ops: u64) -> Result<serde_json::Value> {
    let n = ops.to_string();
    procs::run_json(b.cpu, &b.bins.workload, &["bench-unrelated", "--loop", l.name, "--iterations", &n])
}

/// One of the agent's programs during one loop, per operation of the loop.
struct Profiled {
    lp: &'static Loop,
    program: String,
    hooks: String,
    runs_per_op: f64,
    ns_per_run: f64,
    ns_per_op: f64,
}

/// Per loop, the agent's programs that ran during it, with BPF stats on (not among the timed runs: the statistics add
/// their own clock reads). Each loop runs twice, with N and 2N operations; the difference leaves out what every run
/// does once (mapping and writing the fork loop's 256 MiB allocates 65,536 pages) and is counted per operation.
fn profile_pass(b: &Bench) -> Result<Vec<Profiled>> {
    let _stats = bpfstats::Enabled::new()?;
    let agent = Agent::start(&b.bins.agent, b.other_cpu, &[])?;
    let mut all = Vec::new();
    for l in &LOOPS {
        let n = iterations(b, l);
        let (ops1, once) = counted_run(b, l, n, agent.pid())?;
        let (ops2, twice) = counted_run(b, l, 2 * n, agent.pid())?;
        let ops = (ops2 - ops1) as f64;
        for p in &twice {
            let (cnt1, ns1) = once.iter().find(|q| q.id == p.id).map_or((0, 0), |q| (q.run_cnt, q.run_time_ns));
            let (runs, ns) = (p.run_cnt as f64 - cnt1 as f64, p.run_time_ns as f64 - ns1 as f64);
            // Less than once per thousand operations: other processes' events during the runs, not the loop's.
            if runs / ops < 1e-3 {
                continue;
            }
            all.push(Profiled {
                lp: l,
                program: p.name.clone(),
                hooks: p.hooks_cell(),
                runs_per_op: runs / ops,
                ns_per_run: ns / runs,
                ns_per_op: ns / ops,
            });
        }
    }
    Ok(all)
}

/// One run of `ops` timed operations: every operation it did (warm-up included) and what `agent_pid`'s programs ran.
fn counted_run(b: &Bench, l: &Loop, ops: u64, agent_pid: u32) -> Result<(u64, Vec<bpfstats::ProgStat>)> {
    let before = bpfstats::of_pid(agent_pid)?;
    let v = run_loop(b, l, ops)?;
    let warmup = v["warmup"].as_u64().context("bench-unrelated printed no warmup")?;
    Ok((ops + warmup, bpfstats::since(&before, &bpfstats::of_pid(agent_pid)?)))
}

fn build_report(b: &Bench, raw: BTreeMap<String, Vec<f64>>, profile: Vec<Profiled>) -> Result<Report> {
    let st = |k: &str| b.stats(&raw, k);
    let table = |metric: &str, clock: &str| -> Result<Table> {
        let mut rows = Vec::new();
        for l in &LOOPS {
            let (unit, scale) = l.unit;
            let per_op = |what: &str| -> Result<String> {
                let s = st(&format!("{metric}_{}_{what}", l.name))?;
                Ok(format!("{:.1} ({:.1}–{:.1}) {unit}", s.median / scale, s.min / scale, s.max / scale))
            };
            rows.push(vec![
                l.name.into(),
                l.what.into(),
                iterations(b, l).to_string(),
                per_op("none")?,
                per_op("agent")?,
                st(&format!("{metric}_{}_ratio", l.name))?.show(3),
                st(&format!("{metric}_{}_noise", l.name))?.show(3),
            ]);
        }
        Ok(Table {
            title: format!("{clock} per operation, and the ratio with / without the agent per round"),
            columns: ["loop", "operation", "ops per run", "none", "agent", "agent / none", "none again / none"]
                .map(String::from)
                .to_vec(),
            rows,
        })
    };
    let mut tables = vec![
        table("cpu", "Process CPU time (CLOCK_PROCESS_CPUTIME_ID)")?,
        table("wall", "Wall-clock time (CLOCK_MONOTONIC)")?,
    ];
    let prof_rows: Vec<Vec<String>> = profile
        .iter()
        .map(|p| {
            vec![
                p.lp.name.into(),
                p.program.clone(),
                p.hooks.clone(),
                format!("{:.3}", p.runs_per_op),
                format!("{:.1}", p.ns_per_run),
                format!("{:.1}", p.ns_per_op),
            ]
        })
        .collect();
    if !prof_rows.is_empty() {
        tables.push(Table {
            title: "The agent's programs per operation of each loop (kernel.bpf_stats_enabled, extra runs of N and 2N \
                    operations, differenced; host-wide: other processes' events on the same hooks count too)"
                .into(),
            columns: ["loop", "program", "hooks", "runs per op", "ns/run", "ns per op"].map(String::from).to_vec(),
            rows: prof_rows,
        });
    }
    let mut targets = Vec::new();
    for l in &LOOPS {
        let ratios = &raw[&format!("cpu_{}_ratio", l.name)];
        let slower = ratios.iter().filter(|r| **r > 1.0).count();
        let p = stats::sign_test_p(slower, ratios.len());
        let median = st(&format!("cpu_{}_ratio", l.name))?.median;
        targets.push(Target {
            target: format!("{}: median CPU-time slowdown ≤ 1 %", l.name),
            measured: format!(
                "{median:.3} median; slower in {slower} of {} rounds (one-sided sign test p = {p:.3})",
                ratios.len()
            ),
            met: median <= 1.01,
        });
    }
    let title = "Processes with no notifier and no pinned page (host, tracepoint mode)";
    Ok(b.report("unrelated", title, tables, targets, raw))
}
