//! `madvise`: added cost per invalidation in tracepoint mode. The workload's `bench-madvise` loop (MADV_DONTNEED one
//! page of a KVM-registered mm, touch it: one `kvm_unmap_hva_range` and one `mm_page_alloc` per round) runs pinned to
//! one CPU with, in turn, nothing attached, the floor (empty programs on the agent's hooks), the count (the floor with
//! a minimal per-cgroup count on `kvm_unmap_hva_range`), the agent, and the bpftrace equivalent. Each round runs every
//! variant once in a rotated order plus a closing `none`; a variant's added cost is its ns/op minus the mean of its
//! round's two `none` runs, so slow drifts of the machine's load cancel.
//! Both the process's CPU time per round (the primary figure: time other jobs hold the CPU is not in it, the eBPF
//! programs, which run in the process's context, are) and the wall-clock time are reported.
//! A separate pass with `kernel.bpf_stats_enabled` reports each program's run time per invocation (the profile).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::procs::{self, Agent, Background, PerOp};
use super::report::{Report, Table, Target};
use super::{Bench, bpfstats, bpftrace, fixture};

const VARIANTS: [&str; 6] = ["none", "floor", "count", "mmuscope", "oneliner", "bpftrace"];
const ATTACHED: [&str; 5] = ["floor", "count", "mmuscope", "oneliner", "bpftrace"];
/// The hook the count variant counts on: the one this loop's invalidations fire.
const COUNT_ON: &str = "kvm_unmap_hva_range";

pub fn run(b: &Bench) -> Result<Report> {
    let iterations: u64 = if b.quick { 20_000 } else { 1_000_000 };
    let script = bpftrace::script()?;
    let script_path = b.out_dir().join("mmuscope-equivalent.bt");
    std::fs::create_dir_all(b.out_dir())?;
    std::fs::write(&script_path, &script)?;
    let oneliner_path = b.out_dir().join("oneliner.bt");
    std::fs::write(&oneliner_path, bpftrace::ONE_LINER)?;
    let hooks = fixture::Hooks::of_agent(b)?;
    b.say(format!("floor hooks (the agent's, tracepoint mode): {}", hooks.describe()));
    let with = With { b, hooks: &hooks, script: &script_path, oneliner: &oneliner_path };
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..b.runs {
        let (runs, closing) = b.interleaved_round(round, &VARIANTS, |v| measure(&with, v, iterations))?;
        let show = |m: fn(&PerOp) -> f64| VARIANTS.map(|v| format!("{v} {:.1}", m(&runs[v]))).join(", ");
        b.say(format!(
            "round {}/{}: CPU ns/op {}, none again {:.1}; wall ns/op {}",
            round + 1,
            b.runs,
            show(|r| r.cpu),
            closing.cpu,
            show(|r| r.wall)
        ));
        for (metric, m) in [("cpu", (|r: &PerOp| r.cpu) as fn(&PerOp) -> f64), ("wall", |r: &PerOp| r.wall)] {
            let base = (m(&runs["none"]) + m(&closing)) / 2.0;
            raw.entry(format!("{metric}_none")).or_default().extend([m(&runs["none"]), m(&closing)]);
            for v in ATTACHED {
                raw.entry(format!("{metric}_{v}")).or_default().push(m(&runs[v]));
                raw.entry(format!("{metric}_{v}_added")).or_default().push(m(&runs[v]) - base);
            }
            let added = |v: &str| m(&runs[v]) - base;
            raw.entry(format!("{metric}_slowdown_pct")).or_default().push(added("mmuscope") / base * 100.0);
            for v in ["floor", "count", "oneliner", "bpftrace"] {
                raw.entry(format!("{metric}_over_{v}")).or_default().push(added("mmuscope") / added(v));
            }
        }
    }
    let profile = profile_pass(&with, iterations)?;
    let mut report = build_report(b, iterations, raw, profile)?;
    report.notes.push(format!(
        "floor hooks (from `mmuscope check --mode tracepoint --json` on this kernel): {}; the count variant has the \
         count program on tp_btf/{COUNT_ON} instead of the empty one",
        hooks.describe()
    ));
    Ok(report)
}

/// What the variants attach with.
struct With<'a> {
    b: &'a Bench<'a>,
    hooks: &'a fixture::Hooks,
    script: &'a std::path::Path,
    oneliner: &'a std::path::Path,
}

/// One run of the loop with `variant` attached.
fn measure(with: &With, variant: &str, iterations: u64) -> Result<PerOp> {
    let holder = attach(with, variant)?;
    let it = iterations.to_string();
    let v = procs::run_json(with.b.cpu, &with.b.bins.workload, &["bench-madvise", "--iterations", &it])?;
    drop(holder);
    PerOp::of(&v)
}

/// Starts what `variant` attaches (nothing for `none`); it stays attached until dropped.
fn attach(with: &With, variant: &str) -> Result<Option<Holder>> {
    let b = with.b;
    Ok(match variant {
        "none" => None,
        "floor" => Some(Holder::Fixture(fixture::floor(b, with.hooks, None)?)),
        "count" => Some(Holder::Fixture(fixture::floor(b, with.hooks, Some(COUNT_ON))?)),
        "mmuscope" => Some(Holder::Agent(Agent::start(&b.bins.agent, b.other_cpu, &[])?)),
        "oneliner" => Some(Holder::Fixture(bpftrace_process(b, with.oneliner)?)),
        "bpftrace" => Some(Holder::Fixture(bpftrace_process(b, with.script)?)),
        _ => unreachable!("unknown variant {variant}"),
    })
}

enum Holder {
    Fixture(Background),
    Agent(Agent),
}

impl Holder {
    fn pid(&self) -> u32 {
        match self {
            Holder::Fixture(p) => p.pid(),
            Holder::Agent(a) => a.pid(),
        }
    }
}

fn bpftrace_process(b: &Bench, script: &std::path::Path) -> Result<Background> {
    let mut cmd = crate::process::with_tracefs("taskset");
    cmd.arg("-c").arg(b.other_cpu.to_string()).arg("bpftrace").arg(script);
    Background::until_line(cmd, "bpftrace", "ready", std::time::Duration::from_secs(60), false)
}

/// Run time per invocation of each program of every attached variant, with BPF stats on (which adds its own clock
/// reads, so these runs are not among the timed ones).
fn profile_pass(with: &With, iterations: u64) -> Result<Vec<bpfstats::ProgStat>> {
    let _stats = bpfstats::Enabled::new()?;
    let mut all = Vec::new();
    for v in ATTACHED {
        let holder = attach(with, v)?.context("an attached variant attaches something")?;
        let it = iterations.to_string();
        procs::run_json(with.b.cpu, &with.b.bins.workload, &["bench-madvise", "--iterations", &it])?;
        let mut progs = bpfstats::of_pid(holder.pid())?;
        progs.iter_mut().for_each(|p| p.variant = v.to_owned());
        all.extend(progs.into_iter().filter(|p| p.run_cnt > 0));
        drop(holder);
    }
    Ok(all)
}

fn build_report(
    b: &Bench,
    iterations: u64,
    mut raw: BTreeMap<String, Vec<f64>>,
    profile: Vec<bpfstats::ProgStat>,
) -> Result<Report> {
    // Each round fires one kvm_unmap_hva_range and one mm_page_alloc. The programs on them are the ones that ran at
    // least once per round (the fork-window and sweep programs run a handful of times); the sum of their run time
    // per invocation is the program time a round pays, measured without the wall-clock noise of the loop.
    let per_round: Vec<Vec<String>> = ATTACHED
        .iter()
        .map(|v| {
            let ns: f64 = profile
                .iter()
                .filter(|p| p.variant == *v && p.run_cnt >= iterations)
                .map(bpfstats::ProgStat::ns_per_run)
                .sum();
            raw.insert(format!("{v}_prog_ns_per_round"), vec![ns]);
            vec![(*v).to_owned(), format!("{ns:.1}")]
        })
        .collect();
    let st = |k: &str| b.stats(&raw, k);
    let table = |metric: &str, what: &str| -> Result<Table> {
        let mut rows = vec![vec!["none".into(), st(&format!("{metric}_none"))?.show(1), "—".into()]];
        for v in ATTACHED {
            rows.push(vec![
                v.into(),
                st(&format!("{metric}_{v}"))?.show(1),
                st(&format!("{metric}_{v}_added"))?.show(1),
            ]);
        }
        Ok(Table {
            title: format!("{what} per madvise(MADV_DONTNEED)+touch round, {iterations} rounds per run"),
            columns: vec!["attached".into(), "ns/op median (min–max)".into(), "added ns/op vs none, same round".into()],
            rows,
        })
    };
    let ratio_rows = |metric: &str| -> Result<Vec<Vec<String>>> {
        Ok(vec![
            vec![format!("{metric}: mmuscope added / floor added"), st(&format!("{metric}_over_floor"))?.show(2)],
            vec![format!("{metric}: mmuscope added / count added"), st(&format!("{metric}_over_count"))?.show(2)],
            vec![
                format!("{metric}: mmuscope added / one-liner added"),
                st(&format!("{metric}_over_oneliner"))?.show(2),
            ],
            vec![format!("{metric}: mmuscope added / bpftrace added"), st(&format!("{metric}_over_bpftrace"))?.show(2)],
            vec![format!("{metric}: loop slowdown with mmuscope (%)"), st(&format!("{metric}_slowdown_pct"))?.show(1)],
        ])
    };
    let ratios = [ratio_rows("cpu")?, ratio_rows("wall")?].concat();
    let prof_rows: Vec<Vec<String>> = profile
        .iter()
        .map(|p| {
            let ns = format!("{:.1}", p.ns_per_run());
            vec![p.variant.clone(), p.name.clone(), p.hooks_cell(), p.run_cnt.to_string(), ns]
        })
        .collect();
    let added = |v: &str| -> Result<f64> { Ok(st(&format!("cpu_{v}_added"))?.median) };
    let (m, c, o, t) = (added("mmuscope")?, added("count")?, added("oneliner")?, added("bpftrace")?);
    let mut tables = vec![
        table("cpu", "Process CPU time (CLOCK_PROCESS_CPUTIME_ID)")?,
        table("wall", "Wall-clock time (CLOCK_MONOTONIC)")?,
        Table {
            title: "Ratios, per round (median (min–max))".into(),
            columns: vec!["ratio".into(), "value".into()],
            rows: ratios,
        },
    ];
    if !prof_rows.is_empty() {
        tables.push(Table {
            title: "BPF run time per invocation (kernel.bpf_stats_enabled, one extra run each)".into(),
            columns: ["attached", "program", "hooks", "runs", "ns/run"].map(String::from).to_vec(),
            rows: prof_rows,
        });
        tables.push(Table {
            title: "Program time per round: the programs that ran every round (kvm_unmap_hva_range, mm_page_alloc), \
                    ns/run summed"
                .into(),
            columns: vec!["attached".into(), "ns per round".into()],
            rows: per_round,
        });
    }
    let targets = vec![
        Target {
            target: "mmuscope's added cost ≤ 1.3 × a minimal per-cgroup count's on the same hook".into(),
            // A count whose added cost is not above zero is inside the machine's noise: a ratio to it means nothing.
            measured: if c > 0.0 {
                format!("{m:.1} vs {c:.1} CPU ns/op (medians): {:.2}×", m / c)
            } else {
                format!("{m:.1} vs {c:.1} CPU ns/op (medians): the count's cost is inside the noise, no ratio")
            },
            met: m <= 1.3 * c,
        },
        Target {
            target: "mmuscope's added cost below the bpftrace one-liner's".into(),
            measured: format!("{m:.1} vs {o:.1} CPU ns/op (medians)"),
            met: m < o,
        },
        Target {
            target: "mmuscope's added cost below its bpftrace equivalent's".into(),
            measured: format!("{m:.1} vs {t:.1} CPU ns/op (medians)"),
            met: m < t,
        },
    ];
    Ok(b.report("madvise", "Added cost per invalidation (host, tracepoint mode)", tables, targets, raw))
}
