//! `madvise`: added cost per invalidation in tracepoint mode. The workload's `bench-madvise` loop (MADV_DONTNEED one
//! page of a KVM-registered mm, touch it: one `kvm_unmap_hva_range` and one `mm_page_alloc` per round) runs pinned to
//! one CPU with, in turn, nothing attached, the floor (empty programs on the agent's hooks), the agent, and the
//! bpftrace equivalent. Each round runs every variant once in a rotated order plus a closing `none`; a variant's added
//! cost is its ns/op minus the mean of its round's two `none` runs, so slow drifts of the machine's load cancel.
//! A separate pass with `kernel.bpf_stats_enabled` reports each program's run time per invocation (the profile).

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::procs::{self, Agent, Background};
use super::report::{Report, Table, Target};
use super::{Bench, bpfstats, bpftrace, fixture};

const VARIANTS: [&str; 4] = ["none", "floor", "mmuscope", "bpftrace"];
const ATTACHED: [&str; 3] = ["floor", "mmuscope", "bpftrace"];

pub fn run(b: &Bench) -> Result<Report> {
    let iterations: u64 = if b.quick { 20_000 } else { 1_000_000 };
    let script = bpftrace::script()?;
    let script_path = b.out_dir().join("mmuscope-equivalent.bt");
    std::fs::create_dir_all(b.out_dir())?;
    std::fs::write(&script_path, &script)?;
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..b.runs {
        let mut ns = BTreeMap::new();
        for i in 0..VARIANTS.len() {
            let v = VARIANTS[(i + round) % VARIANTS.len()];
            ns.insert(v, measure(b, v, iterations, &script_path)?.0);
        }
        let none_end = measure(b, "none", iterations, &script_path)?.0;
        let base = (ns["none"] + none_end) / 2.0;
        b.say(format!(
            "round {}/{}: none {:.1}/{none_end:.1}, floor {:.1}, mmuscope {:.1}, bpftrace {:.1} ns/op",
            round + 1,
            b.runs,
            ns["none"],
            ns["floor"],
            ns["mmuscope"],
            ns["bpftrace"]
        ));
        raw.entry("none".into()).or_default().extend([ns["none"], none_end]);
        for v in ATTACHED {
            raw.entry(v.into()).or_default().push(ns[v]);
            raw.entry(format!("{v}_added")).or_default().push(ns[v] - base);
        }
        raw.entry("mmuscope_slowdown_pct".into()).or_default().push((ns["mmuscope"] / base - 1.0) * 100.0);
        raw.entry("mmuscope_over_floor".into()).or_default().push((ns["mmuscope"] - base) / (ns["floor"] - base));
        raw.entry("mmuscope_over_bpftrace".into()).or_default().push((ns["mmuscope"] - base) / (ns["bpftrace"] - base));
    }
    let profile = profile_pass(b, iterations, &script_path)?;
    build_report(b, iterations, raw, profile)
}

/// One run of the loop with `variant` attached: (ns/op, the attached process's pid if any).
fn measure(b: &Bench, variant: &str, iterations: u64, script: &std::path::Path) -> Result<(f64, Option<u32>)> {
    let holder: Option<Holder> = match variant {
        "none" => None,
        "floor" => Some(Holder::Fixture(fixture::floor(b)?)),
        "mmuscope" => Some(Holder::Agent(Agent::start(&b.bins.agent, b.other_cpu, &[])?)),
        "bpftrace" => Some(Holder::Fixture(bpftrace_process(b, script)?)),
        _ => unreachable!("unknown variant {variant}"),
    };
    let pid = holder.as_ref().map(Holder::pid);
    let it = iterations.to_string();
    let v = procs::run_json(b.cpu, &b.bins.workload, &["bench-madvise", "--iterations", &it])?;
    drop(holder);
    let ns = v["ns_per_op"].as_f64().context("bench-madvise printed no ns_per_op")?;
    Ok((ns, pid))
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
    let mut cmd = std::process::Command::new("taskset");
    cmd.arg("-c").arg(b.other_cpu.to_string()).arg("bpftrace").arg(script);
    Background::until_line(cmd, "bpftrace", "ready", std::time::Duration::from_secs(60))
}

/// Run time per invocation of each program of the floor, the agent and bpftrace, with BPF stats on (which adds
/// its own clock reads, so these runs are not among the timed ones).
fn profile_pass(b: &Bench, iterations: u64, script: &std::path::Path) -> Result<Vec<bpfstats::ProgStat>> {
    let _stats = bpfstats::Enabled::new()?;
    let mut all = Vec::new();
    for v in ATTACHED {
        let holder = match v {
            "floor" => Holder::Fixture(fixture::floor(b)?),
            "mmuscope" => Holder::Agent(Agent::start(&b.bins.agent, b.other_cpu, &[])?),
            _ => Holder::Fixture(bpftrace_process(b, script)?),
        };
        let it = iterations.to_string();
        procs::run_json(b.cpu, &b.bins.workload, &["bench-madvise", "--iterations", &it])?;
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
    raw: BTreeMap<String, Vec<f64>>,
    profile: Vec<bpfstats::ProgStat>,
) -> Result<Report> {
    let st = |k: &str| b.stats(&raw, k);
    let mut rows = vec![vec!["none".into(), st("none")?.show(1), "—".into()]];
    for v in ATTACHED {
        rows.push(vec![v.into(), st(v)?.show(1), st(&format!("{v}_added"))?.show(1)]);
    }
    let ratios = vec![
        vec!["mmuscope added / floor added".into(), st("mmuscope_over_floor")?.show(2)],
        vec!["mmuscope added / bpftrace added".into(), st("mmuscope_over_bpftrace")?.show(2)],
        vec!["slowdown of the loop with mmuscope (%)".into(), st("mmuscope_slowdown_pct")?.show(1)],
    ];
    let prof_rows: Vec<Vec<String>> = profile
        .iter()
        .map(|p| vec![p.variant.clone(), p.name.clone(), p.run_cnt.to_string(), format!("{:.1}", p.ns_per_run())])
        .collect();
    let (m, f, t) = (st("mmuscope_added")?.median, st("floor_added")?.median, st("bpftrace_added")?.median);
    let slow = st("mmuscope_slowdown_pct")?.median;
    let mut tables = vec![
        Table {
            title: format!("ns per madvise(MADV_DONTNEED)+touch round, {iterations} rounds per run"),
            columns: vec!["attached".into(), "ns/op median (min–max)".into(), "added ns/op vs none, same round".into()],
            rows,
        },
        Table {
            title: "Ratios, per round (median (min–max))".into(),
            columns: vec!["ratio".into(), "value".into()],
            rows: ratios,
        },
    ];
    if !prof_rows.is_empty() {
        tables.push(Table {
            title: "BPF run time per invocation (kernel.bpf_stats_enabled, one extra run each)".into(),
            columns: vec!["attached".into(), "program".into(), "runs".into(), "ns/run".into()],
            rows: prof_rows,
        });
    }
    let targets = vec![
        Target {
            target: "mmuscope's added cost ≤ 1.5 × the floor's".into(),
            measured: format!("{m:.1} vs {f:.1} ns/op (medians): {:.2}×", m / f),
            met: m <= 1.5 * f,
        },
        Target {
            target: "mmuscope's added cost below bpftrace's".into(),
            measured: format!("{m:.1} vs {t:.1} ns/op (medians)"),
            met: m < t,
        },
        Target { target: "loop slowdown ≤ 5 %".into(), measured: format!("{slow:.1} % (median)"), met: slow <= 5.0 },
    ];
    Ok(b.report("madvise", "Added cost per invalidation (host, tracepoint mode)", tables, targets, raw))
}
