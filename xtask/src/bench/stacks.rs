//! `stacks`: what the on-demand stack capture (`/api/v1/stacks`) costs the observed KVM madvise loop of `madvise`
//! (one `kvm_unmap_hva_range` per round, which the agent's `kvm_unmap_tp_btf` counts and, while a request runs,
//! captures): with nothing attached (`none`), with the agent started with `--stacks.disable` (`disabled`: the
//! programs are loaded without the capture, the verifier drops it), with the agent and no stack request (`off`: the
//! capture's idle check, one load and a branch), and with the agent while a request runs for the whole loop (`armed`:
//! `bpf_get_stackid` and a per-CPU count per event). `off / disabled` is what the capture costs while no request runs
//! (issue 18's bound), `armed − off` per round the price of one captured event. Each round runs the four in a
//! rotated order plus a closing `none`; ratios are taken within a round. The agent's start and stop are each
//! followed by `unrelated`'s settling pause. A profile pass with `kernel.bpf_stats_enabled` gives the capturing
//! program's run time per invocation in the three agent variants.
//!
//! The request's length comes from a first timed run of the loop (three times its wall time plus a second, at most
//! the API's 60 s); a run whose loop outlasts the capture is an error, as is a capture that saw fewer events than the
//! loop made (the stacks must have been taken, or `armed` measures nothing).

use std::collections::BTreeMap;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::procs::{self, Agent, PerOp};
use super::report::{Report, Table, Target};
use super::{Bench, bpfstats, http, unrelated};

const VARIANTS: [&str; 4] = ["none", "disabled", "off", "armed"];
/// The agent variants and their extra arguments.
const AGENT_VARIANTS: [(&str, &[&str]); 3] = [("disabled", &["--stacks.disable"]), ("off", &[]), ("armed", &[])];
/// Time the request is given to arm the capture before the loop starts.
const ARM_DELAY: Duration = Duration::from_millis(1000);
/// The program that captures this loop's events.
const PROGRAM: &str = "kvm_unmap_tp_btf";

pub fn run(b: &Bench) -> Result<Report> {
    let iterations: u64 = if b.quick { 20_000 } else { 1_000_000 };
    let warm = loop_once(b, iterations)?;
    let seconds = ((warm.wall * iterations as f64 / 1e9 * 3.0).ceil() as u64 + 1).clamp(2, 60);
    b.say(format!(
        "one loop takes {:.2} s of wall time: each armed run captures for {seconds} s",
        warm.wall * 1e-9 * iterations as f64
    ));
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..b.runs {
        let (runs, closing) = b.interleaved_round(round, &VARIANTS, |v| measure(b, v, iterations, seconds))?;
        let show = |m: fn(&PerOp) -> f64| VARIANTS.map(|v| format!("{v} {:.1}", m(&runs[v]))).join(", ");
        b.say(format!("round {}/{}: CPU ns/op {}, none again {:.1}", round + 1, b.runs, show(|r| r.cpu), closing.cpu));
        for (metric, m) in [("cpu", (|r: &PerOp| r.cpu) as fn(&PerOp) -> f64), ("wall", |r: &PerOp| r.wall)] {
            let base = (m(&runs["none"]) + m(&closing)) / 2.0;
            raw.entry(format!("{metric}_none")).or_default().extend([m(&runs["none"]), m(&closing)]);
            for (v, _) in AGENT_VARIANTS {
                raw.entry(format!("{metric}_{v}")).or_default().push(m(&runs[v]));
                raw.entry(format!("{metric}_{v}_over_none")).or_default().push(m(&runs[v]) / base);
            }
            raw.entry(format!("{metric}_off_over_disabled")).or_default().push(m(&runs["off"]) / m(&runs["disabled"]));
            // The machine's own noise: the same variant twice in one round.
            raw.entry(format!("{metric}_none_again_over_none")).or_default().push(m(&closing) / m(&runs["none"]));
            raw.entry(format!("{metric}_armed_over_off")).or_default().push(m(&runs["armed"]) / m(&runs["off"]));
            raw.entry(format!("{metric}_armed_minus_off")).or_default().push(m(&runs["armed"]) - m(&runs["off"]));
        }
    }
    let profile = profile_pass(b, iterations, seconds)?;
    build_report(b, iterations, seconds, raw, &profile)
}

fn loop_once(b: &Bench, iterations: u64) -> Result<PerOp> {
    let it = iterations.to_string();
    PerOp::of(&procs::run_json(b.cpu, &b.bins.workload, &["bench-madvise", "--iterations", &it])?)
}

/// One run of the loop with `variant`.
fn measure(b: &Bench, variant: &str, iterations: u64, seconds: u64) -> Result<PerOp> {
    let agent = match AGENT_VARIANTS.iter().find(|(v, _)| *v == variant) {
        None => None,
        Some((_, args)) => Some(Agent::start(&b.bins.agent, b.other_cpu, args)?),
    };
    if agent.is_some() {
        unrelated::settle(b);
    }
    let capture = match (&agent, variant) {
        (Some(a), "armed") => Some(Capture::start(a, seconds)),
        _ => None,
    };
    let per_op = loop_once(b, iterations)?;
    if let Some(c) = capture {
        c.finish(iterations)?;
    }
    if let Some(agent) = agent {
        drop(agent);
        unrelated::settle(b);
    }
    Ok(per_op)
}

/// A stack request running in a thread.
struct Capture {
    started: Instant,
    seconds: u64,
    handle: JoinHandle<Result<(u16, String)>>,
}

impl Capture {
    fn start(agent: &Agent, seconds: u64) -> Self {
        let addr = agent.addr;
        let path = format!("/api/v1/stacks?seconds={seconds}&kind=invalidation&format=json");
        let handle = thread::spawn(move || http::get_with_timeout(addr, &path, Duration::from_secs(seconds + 30)));
        thread::sleep(ARM_DELAY);
        Self { started: Instant::now() - ARM_DELAY, seconds, handle }
    }

    /// After the loop: it must have ended inside the capture, and the capture must hold its events.
    fn finish(self, iterations: u64) -> Result<()> {
        let took = self.started.elapsed();
        ensure!(
            took < Duration::from_secs(self.seconds),
            "the loop ended {took:?} after the stack request started, after its {} s capture",
            self.seconds
        );
        let (status, body) = self.handle.join().map_err(|_| anyhow::anyhow!("stack request thread panicked"))??;
        ensure!(status == 200, "/api/v1/stacks: HTTP {status}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).context("/api/v1/stacks: not JSON")?;
        let total = v["total"].as_u64().context("/api/v1/stacks: no total")?;
        if total < iterations {
            bail!("the capture counted {total} events for a loop of {iterations} invalidations (lost {})", v["lost"]);
        }
        Ok(())
    }
}

/// `PROGRAM`'s run time per invocation in each agent variant (BPF stats add their own clock reads: not a timed run).
fn profile_pass(b: &Bench, iterations: u64, seconds: u64) -> Result<Vec<(String, f64, u64)>> {
    let _stats = bpfstats::Enabled::new()?;
    let mut out = Vec::new();
    for (v, args) in AGENT_VARIANTS {
        let agent = Agent::start(&b.bins.agent, b.other_cpu, args)?;
        let capture = (v == "armed").then(|| Capture::start(&agent, seconds));
        loop_once(b, iterations)?;
        let progs = bpfstats::of_pid(agent.pid())?;
        if let Some(c) = capture {
            c.finish(iterations)?;
        }
        let p = progs.iter().find(|p| p.name == PROGRAM).with_context(|| format!("no program {PROGRAM} loaded"))?;
        out.push((v.to_owned(), p.ns_per_run(), p.run_cnt));
    }
    Ok(out)
}

fn build_report(
    b: &Bench,
    iterations: u64,
    seconds: u64,
    mut raw: BTreeMap<String, Vec<f64>>,
    profile: &[(String, f64, u64)],
) -> Result<Report> {
    for (v, ns, _) in profile {
        raw.insert(format!("{PROGRAM}_ns_per_run_{v}"), vec![*ns]);
    }
    let st = |k: &str| b.stats(&raw, k);
    let per_op = |metric: &str, what: &str| -> Result<Table> {
        Ok(Table {
            title: format!("{what} per madvise(MADV_DONTNEED)+touch round, {iterations} rounds per run"),
            columns: vec!["variant".into(), "ns/op median (min–max)".into()],
            rows: VARIANTS
                .iter()
                .map(|v| Ok(vec![(*v).to_owned(), st(&format!("{metric}_{v}"))?.show(1)]))
                .collect::<Result<_>>()?,
        })
    };
    let ratio_rows = |metric: &str| -> Result<Vec<Vec<String>>> {
        Ok(vec![
            vec![format!("{metric}: disabled / none"), st(&format!("{metric}_disabled_over_none"))?.show(3)],
            vec![format!("{metric}: off / none"), st(&format!("{metric}_off_over_none"))?.show(3)],
            vec![format!("{metric}: off / disabled"), st(&format!("{metric}_off_over_disabled"))?.show(3)],
            vec![
                format!("{metric}: none again / none (this machine's noise)"),
                st(&format!("{metric}_none_again_over_none"))?.show(3),
            ],
            vec![format!("{metric}: armed / none"), st(&format!("{metric}_armed_over_none"))?.show(3)],
            vec![format!("{metric}: armed / off"), st(&format!("{metric}_armed_over_off"))?.show(3)],
            vec![
                format!("{metric}: armed − off, ns per captured event"),
                st(&format!("{metric}_armed_minus_off"))?.show(1),
            ],
        ])
    };
    let mut tables = vec![
        per_op("cpu", "Process CPU time (CLOCK_PROCESS_CPUTIME_ID)")?,
        per_op("wall", "Wall-clock time (CLOCK_MONOTONIC)")?,
        Table {
            title: "Ratios within a round, median (min–max)".into(),
            columns: vec!["ratio".into(), "value".into()],
            rows: [ratio_rows("cpu")?, ratio_rows("wall")?].concat(),
        },
    ];
    tables.push(Table {
        title: format!("{PROGRAM} run time per invocation (kernel.bpf_stats_enabled, one extra run each)"),
        columns: vec!["variant".into(), "runs".into(), "ns/run".into()],
        rows: profile.iter().map(|(v, ns, n)| vec![v.clone(), n.to_string(), format!("{ns:.1}")]).collect(),
    });
    let idle = st("cpu_off_over_disabled")?.median;
    let armed = st("cpu_armed_over_off")?.median;
    let per_event = st("cpu_armed_minus_off")?.median;
    let loop_ns = st("cpu_disabled")?.median;
    let ns = |v: &str| profile.iter().find(|(p, _, _)| p == v).map(|(_, ns, _)| *ns);
    let check_ns = match (ns("off"), ns("disabled")) {
        (Some(off), Some(disabled)) => off - disabled,
        _ => bail!("the profile pass has no run time for `off` or `disabled`"),
    };
    let noise = st("cpu_none_again_over_none")?;
    let targets = vec![
        // Program time decides: `off` and `disabled` differ only in this program's code, and its run time is measured
        // per invocation, while the loop's CPU medians move by more than 5 % between two runs of the same variant
        // here (the noise row).
        Target {
            target: "no stack request running: the capture costs the observed loop ≤ 5 % extra (issue 18)".into(),
            measured: format!(
                "{PROGRAM} {check_ns:+.1} ns per run off against disabled = {:+.2} % of the loop's {loop_ns:.0} ns \
                 (program time, which decides); CPU-time median off / disabled {idle:.3}, beside this machine's noise \
                 (none again / none {:.3}, {:.3}–{:.3})",
                check_ns / loop_ns * 100.0,
                noise.median,
                noise.min,
                noise.max
            ),
            met: check_ns / loop_ns <= 0.05,
        },
        Target {
            target: "informational: the price per captured event while a request runs (documented, not bounded)".into(),
            measured: format!("armed − off = {per_event:.1} ns of CPU per event; armed / off = {armed:.3}"),
            met: true,
        },
    ];
    let mut report = b.report(
        "stacks",
        "Stack capture cost on the observed madvise loop (host, tracepoint mode)",
        tables,
        targets,
        raw,
    );
    report.notes.push(format!(
        "armed runs: `/api/v1/stacks?seconds={seconds}&kind=invalidation` started {ARM_DELAY:?} before the loop; each \
         capture held at least the loop's {iterations} events (checked)"
    ));
    Ok(report)
}
