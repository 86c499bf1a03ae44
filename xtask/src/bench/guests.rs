//! `guests`: the madvise loop (a KVM notifier: something to see) and the `unrelated` loops (nothing to see) in QEMU
//! guests (Debian 6.1 and 6.12, TCG, one vCPU) with the agent in fentry and kprobe mode, as ratios only: TCG's
//! absolute times mean nothing. One boot per kernel × mode; inside it each round runs every loop without the agent,
//! with it, and without it again, then the [`KSM_COW_LOOPS`] with the agent run with `--probes.ksm-cow` and without
//! it again; a loop's ratio in the round is each agent run over the mean of the runs without it on either side, in
//! the process's CPU time (the agent's own threads share the one vCPU). No floor and no bpftrace here (the guest has
//! neither), so these are slowdowns.
//!
//! TCG's wall-clock ratios are noisy (a loop no program of the agent hooks moves by tens of percent), so what the
//! agent makes each loop run is also counted: after the rounds, one agent with `--bpf.run-stats` (as installed, with
//! `--probes.keep-attached`, and with `--probes.ksm-cow` for the `cow` loop) and each loop run with N and 2N operations, every program's
//! `mmuscope_bpf_program_runs_total` and `_run_seconds_total` scraped around each and differenced (what every run
//! does once, the shell's own forks included, drops out): program runs per operation and ns per run. For the
//! unrelated loops the answer should be no program at all; for the `cow` loop it prices the `ksm_cow` family
//! against the fault's own CPU time in the runs without the agent.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Bench;
use super::report::{Report, Table};
use super::unrelated::LOOPS;
use crate::vm::{self, GuestOptions, initramfs::GuestFile};

const KERNELS: [&str; 2] = ["6.1", "6.12"];
const MODES: [&str; 2] = ["fentry", "kprobe"];
/// The loops also run with `--probes.ksm-cow`: the copy-on-write fault it hooks, and an anonymous fault it does not.
const KSM_COW_LOOPS: [&str; 2] = ["cow", "fault"];
/// The variant names in the guest's `BENCH` lines.
const NONE: &str = "none";
const AGENT: &str = "mmuscope";
const KSM_COW: &str = "ksmcow";
/// The run-statistics tag prefix of the passes with `--probes.keep-attached` (the price of keeping the on-demand hooks
/// attached for good: what kprobe mode and fentry on 5.10 pay for the families they switch off by default).
const KEEP: &str = "keep_";

/// The agent's flags for the `ksm_cow` runs: in kprobe mode the family needs the `causes` family, which is off there
/// by default (its hooks cannot be attached on demand), so `--probes.keep-attached` too.
fn ksm_cow_flags(mode: &str) -> &'static str {
    if mode == "kprobe" { "--probes.ksm-cow --probes.keep-attached" } else { "--probes.ksm-cow" }
}

/// One loop as the guest runs it, with counts sized for TCG (tens to hundreds of times slower than the host) so that
/// a whole `guests` run stays within about ten minutes.
struct GuestLoop {
    name: &'static str,
    /// The workload's arguments before `--iterations`.
    mode: String,
    iterations: u64,
}

impl GuestLoop {
    fn command(&self) -> String {
        format!("/bin/mmuscope-workload {} --iterations {}", self.mode, self.iterations)
    }
}

/// The madvise loop (the agent has something to see), then the `unrelated` ones (nothing to see).
fn loops(quick: bool) -> Vec<GuestLoop> {
    let madvise =
        GuestLoop { name: "madvise", mode: "bench-madvise".into(), iterations: if quick { 500 } else { 20_000 } };
    let unrelated = LOOPS.iter().map(|l| GuestLoop {
        name: l.name,
        mode: format!("bench-unrelated --loop {}", l.name),
        iterations: if quick { l.quick } else { l.guest },
    });
    std::iter::once(madvise).chain(unrelated).collect()
}

pub fn run(b: &Bench) -> Result<Report> {
    let loops = loops(b.quick);
    let files = vec![
        GuestFile { host: b.bins.agent.clone(), guest: PathBuf::from("/bin/mmuscope") },
        GuestFile { host: b.bins.workload.clone(), guest: PathBuf::from("/bin/mmuscope-workload") },
    ];
    let kernels: &[&str] = if b.quick { &KERNELS[..1] } else { &KERNELS };
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (mut madvise_rows, mut unrelated_rows, mut ksm_rows, mut price_rows, mut per_op_rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for k in kernels {
        let kernel = vm::kernel(b.ws, &k.parse()?)?;
        for mode in MODES {
            let opts = GuestOptions {
                label: format!("bench-{mode}"),
                memory_mib: 1024,
                cpus: 1,
                timeout: Duration::from_secs(1200),
                echo: None,
            };
            let cmd = vec!["sh".to_owned(), "-c".to_owned(), script(mode, &loops, b.runs)];
            let done = vm::run_in_guest(b.ws, &kernel, &files, &cmd, &opts)?;
            if done.status != 0 {
                bail!("{k} × {mode}: the guest script exited {}:\n{}", done.status, done.output);
            }
            let ratios = ratios(&done.output).with_context(|| format!("{k} × {mode}:\n{}", done.output))?;
            let release = &kernel.meta.release;
            let mut cells = vec![release.clone(), mode.into()];
            for l in &loops {
                let key = (l.name.to_owned(), AGENT.to_owned());
                let r = ratios.get(&key).with_context(|| format!("{k} × {mode}: no runs of {}", l.name))?;
                b.say(format!("{release} × {mode}, {}: ratios {r:.3?}", l.name));
                let key = format!("{k}_{mode}_{}", l.name);
                raw.insert(key.clone(), r.clone());
                let s = b.stats(&raw, &key)?;
                if l.name == "madvise" {
                    let slowdown = format!("{:+.1}", (s.median - 1.0) * 100.0);
                    madvise_rows.push(vec![release.clone(), mode.into(), s.show(3), slowdown]);
                } else {
                    cells.push(s.show(3));
                }
            }
            unrelated_rows.push(cells);
            for name in KSM_COW_LOOPS {
                let key = (name.to_owned(), KSM_COW.to_owned());
                let r = ratios.get(&key).with_context(|| format!("{k} × {mode}: no {KSM_COW} runs of {name}"))?;
                b.say(format!("{release} × {mode}, {name} with --probes.ksm-cow: ratios {r:.3?}"));
                let with = format!("{k}_{mode}_{name}_{KSM_COW}");
                raw.insert(with.clone(), r.clone());
                let without = b.stats(&raw, &format!("{k}_{mode}_{name}"))?.show(3);
                ksm_rows.push(vec![release.clone(), mode.into(), name.into(), without, b.stats(&raw, &with)?.show(3)]);
            }
            let cow_ns = cpu_ns(&done.output, "cow", NONE)?;
            let cow_key = format!("{k}_{mode}_cow_{NONE}_cpu_ns");
            raw.insert(cow_key.clone(), cow_ns);
            let fault_ns = b.stats(&raw, &cow_key)?.median;
            let priced = per_op(&done.output, KSM_COW)
                .with_context(|| format!("{k} × {mode}: the run-statistics pass of --probes.ksm-cow"))?;
            if !priced.iter().any(|p| p.program.contains("ksm_cow")) {
                bail!("{k} × {mode}: no ksm_cow program ran (is the family attached with --probes.ksm-cow?)");
            }
            for p in priced.into_iter().filter(|p| p.program.contains("ksm_cow")) {
                let per_fault = p.runs_per_op * p.ns_per_run;
                b.say(format!(
                    "{release} × {mode}: {} {:.3} runs per COW fault, {:.0} ns per run; fault {fault_ns:.0} ns",
                    p.program, p.runs_per_op, p.ns_per_run
                ));
                raw.insert(format!("{k}_{mode}_{}_runs_per_fault", p.program), vec![p.runs_per_op]);
                raw.insert(format!("{k}_{mode}_{}_ns_per_run", p.program), vec![p.ns_per_run]);
                price_rows.push(vec![
                    release.clone(),
                    mode.into(),
                    p.program,
                    format!("{:.3}", p.runs_per_op),
                    format!("{:.0}", p.ns_per_run),
                    format!("{per_fault:.0}"),
                    format!("{fault_ns:.0}"),
                    format!("{:.1}", per_fault / fault_ns * 100.0),
                ]);
            }
            for l in loops.iter().filter(|l| l.name != "madvise") {
                let mut cells = vec![release.clone(), mode.to_owned(), l.name.to_owned()];
                for tag in [l.name.to_owned(), format!("{KEEP}{}", l.name)] {
                    let ran = per_op(&done.output, &tag)
                        .with_context(|| format!("{k} × {mode}: the run-statistics pass {tag}"))?;
                    b.say(format!("{release} × {mode}, {tag}: agent programs per operation {ran:?}"));
                    for p in &ran {
                        raw.insert(format!("{k}_{mode}_{tag}_{}_runs_per_op", p.program), vec![p.runs_per_op]);
                    }
                    cells.extend(per_op_cells(&ran));
                }
                per_op_rows.push(cells);
            }
        }
    }
    let (madvise, unrelated) = loops.split_first().context("no loops")?;
    let ops: Vec<String> = unrelated.iter().map(|l| format!("{} {}", l.name, l.iterations)).collect();
    let mut columns = vec!["kernel".to_owned(), "mode".to_owned()];
    columns.extend(LOOPS.iter().map(|l| format!("{} ({})", l.name, l.what)));
    let tables = vec![
        Table {
            title: format!(
                "madvise loop with / without the agent, CPU time per round ({} rounds per run, TCG)",
                madvise.iterations
            ),
            columns: vec!["kernel".into(), "mode".into(), "ratio median (min–max)".into(), "slowdown %".into()],
            rows: madvise_rows,
        },
        Table {
            title: format!(
                "Loops with no notifier and no pinned page, with / without the agent, CPU time per round (TCG; \
                 operations per run: {})",
                ops.join(", ")
            ),
            columns,
            rows: unrelated_rows,
        },
        Table {
            title: "The agent's programs per operation of each loop, as installed and with `--probes.keep-attached` \
                    (`--bpf.run-stats`, runs of N and 2N operations differenced, N as above; programs with no run \
                    left out; kprobe mode's traps are outside a program's run time)"
                .into(),
            columns: [
                "kernel",
                "mode",
                "loop",
                "programs run per operation",
                "ns per operation",
                "with --probes.keep-attached",
                "ns per operation",
            ]
            .map(String::from)
            .to_vec(),
            rows: per_op_rows,
        },
        Table {
            title: "The agent with / without `--probes.ksm-cow` (the `ksm_cow` family, off by default; in kprobe mode \
                    with `--probes.keep-attached`, which it needs there), CPU time per round (TCG)"
                .into(),
            columns: ["kernel", "mode", "loop", "agent / none", "agent --probes.ksm-cow / none"]
                .map(String::from)
                .to_vec(),
            rows: ksm_rows,
        },
        Table {
            title: format!(
                "The `ksm_cow` programs per copy-on-write fault (`--bpf.run-stats`, cow runs of {0} and {1} faults, \
                 differenced; TCG inflates both the programs' and the fault's time; kprobe mode's trampolines are not \
                 in a program's run time)",
                cow_iterations(&loops),
                2 * cow_iterations(&loops)
            ),
            columns: [
                "kernel",
                "mode",
                "program",
                "runs per COW fault",
                "ns/run",
                "ns per fault",
                "COW fault CPU ns (no agent, median)",
                "share of the fault %",
            ]
            .map(String::from)
            .to_vec(),
            rows: price_rows,
        },
    ];
    Ok(b.report("guests", "Probe cost in QEMU guests (fentry, kprobe): ratios", tables, vec![], raw))
}

/// The guest's command: `runs` rounds of none / agent / none, each running every loop once and printing
/// `BENCH <variant> <loop> <json>` per run; then the run-statistics passes (`STATS <tag> <i>` scrapes around
/// `COUNT <tag> <i>` runs of N and 2N operations, see [`per_op`]).
fn script(mode: &str, loops: &[GuestLoop], runs: usize) -> String {
    let bench = |l: &GuestLoop| format!("  echo \"BENCH $1 {} $({})\"\n", l.name, l.command());
    let all: String = loops.iter().map(bench).collect();
    let ksm: String = loops.iter().filter(|l| KSM_COW_LOOPS.contains(&l.name)).map(bench).collect();
    let twice = |tag: &str, l: &GuestLoop| format!("twice {tag} {} {}\n", l.name, l.iterations);
    let cow = loops.iter().find(|l| l.name == "cow").map(|l| twice(KSM_COW, l)).unwrap_or_default();
    let unrelated: String = loops.iter().filter(|l| l.name != "madvise").map(|l| twice(l.name, l)).collect();
    let kept: String =
        loops.iter().filter(|l| l.name != "madvise").map(|l| twice(&format!("{KEEP}{}", l.name), l)).collect();
    let ksm_flags = ksm_cow_flags(mode);
    format!(
        r#"set -e
all() {{
{all}}}
ksm() {{
{ksm}}}
stats() {{
  echo "STATS $1 $2 $(wget -q -O - http://127.0.0.1:9476/metrics | grep '^mmuscope_bpf_program_run' | tr '\n' ' ')"
}}
twice() {{
  stats $1 0; echo "COUNT $1 1 $(/bin/mmuscope-workload bench-unrelated --loop $2 --iterations $3)"
  stats $1 1; echo "COUNT $1 2 $(/bin/mmuscope-workload bench-unrelated --loop $2 --iterations $(($3 * 2)))"
  stats $1 2
}}
start() {{
  /bin/mmuscope run --mode {mode} "$@" --web.listen-address 127.0.0.1:9476 >/tmp/agent.log 2>&1 &
  AGENT=$!; n=0
  until wget -q -O /dev/null http://127.0.0.1:9476/readyz 2>/dev/null; do
    n=$((n+1)); if [ $n -gt 1200 ] || ! kill -0 $AGENT 2>/dev/null; then cat /tmp/agent.log; exit 3; fi; sleep 0.5
  done
}}
stop() {{ kill $AGENT; wait $AGENT || true; sleep 1; }}
r=0
while [ $r -lt {runs} ]; do
  all {NONE}; start; all {AGENT}; stop; all {NONE}
  start {ksm_flags}; ksm {KSM_COW}; stop; ksm {NONE}; r=$((r+1))
done
start {ksm_flags} --bpf.run-stats
{cow}stop
start --bpf.run-stats
{unrelated}stop
start --bpf.run-stats --probes.keep-attached
{kept}stop
"#
    )
}

/// The `cow` loop's faults per run.
fn cow_iterations(loops: &[GuestLoop]) -> u64 {
    loops.iter().find(|l| l.name == "cow").map_or(0, |l| l.iterations)
}

/// Each loop's runs in order: (variant, CPU ns per operation).
fn runs(output: &str) -> Result<BTreeMap<String, Vec<(String, f64)>>> {
    let mut runs: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for l in output.lines().filter_map(|l| l.trim().strip_prefix("BENCH ")) {
        let mut parts = l.splitn(3, ' ');
        let (Some(variant), Some(name), Some(json)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("malformed BENCH line {l:?}");
        };
        let v: serde_json::Value = serde_json::from_str(json).with_context(|| format!("parsing {json}"))?;
        let cpu = v["cpu_ns_per_op"].as_f64().context("no cpu_ns_per_op")?;
        runs.entry(name.to_owned()).or_default().push((variant.to_owned(), cpu));
    }
    if runs.is_empty() {
        bail!("no BENCH lines");
    }
    Ok(runs)
}

/// Per loop and agent variant, one ratio per agent run: the run over the mean of the runs without the agent right
/// before and after it (CPU time).
fn ratios(output: &str) -> Result<BTreeMap<(String, String), Vec<f64>>> {
    let mut ratios: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for (name, r) in runs(output)? {
        let seq = || r.iter().map(|x| &x.0).collect::<Vec<_>>();
        if r.first().is_none_or(|f| f.0 != NONE) || r.last().is_none_or(|f| f.0 != NONE) {
            bail!("{name}: expected agent runs between runs without it; got {:?}", seq());
        }
        for w in r.windows(3).filter(|w| w[1].0 != NONE) {
            if w[0].0 != NONE || w[2].0 != NONE {
                bail!("{name}: expected agent runs between runs without it; got {:?}", seq());
            }
            ratios.entry((name.clone(), w[1].0.clone())).or_default().push(w[1].1 / ((w[0].1 + w[2].1) / 2.0));
        }
    }
    Ok(ratios)
}

/// The CPU ns per operation of every `variant` run of loop `name`.
fn cpu_ns(output: &str, name: &str, variant: &str) -> Result<Vec<f64>> {
    let r = runs(output)?.remove(name).with_context(|| format!("no runs of {name}"))?;
    Ok(r.into_iter().filter(|x| x.0 == variant).map(|x| x.1).collect())
}

/// One program's runs per operation of a loop.
#[derive(Debug, PartialEq)]
struct Priced {
    program: String,
    runs_per_op: f64,
    ns_per_run: f64,
}

/// From the guest's `STATS <tag> i` scrapes (around `COUNT <tag> 1`, a loop with N operations, and `COUNT <tag> 2`,
/// with 2N): each program's runs and run time in the second run minus those in the first, over the operations it did
/// more. Programs that ran no more in the second run than in the first are left out.
fn per_op(output: &str, tag: &str) -> Result<Vec<Priced>> {
    let line = |prefix: &str| {
        output.lines().find_map(|l| l.trim().strip_prefix(prefix)).with_context(|| format!("no {prefix:?} line"))
    };
    // (program → (runs, seconds)) of one scrape.
    let scrape = |i: u32| -> Result<BTreeMap<String, (f64, f64)>> {
        let mut m: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let prefix = format!("STATS {tag} {i}");
        let toks: Vec<&str> = line(&prefix)?.split_whitespace().collect();
        if toks.is_empty() {
            bail!("{prefix}: no program statistics (is --bpf.run-stats on?)");
        }
        for pair in toks.chunks(2) {
            let [series, value] = pair else { bail!("odd scrape {toks:?}") };
            let (metric, labels) = series.split_once('{').with_context(|| format!("no labels in {series}"))?;
            let program = labels
                .split(',')
                .find_map(|l| l.strip_prefix("program=\""))
                .and_then(|p| p.split('"').next())
                .with_context(|| format!("no program in {series}"))?;
            let v: f64 = value.parse().with_context(|| format!("value {value}"))?;
            let e = m.entry(program.to_owned()).or_default();
            match metric {
                "mmuscope_bpf_program_runs_total" => e.0 = v,
                "mmuscope_bpf_program_run_seconds_total" => e.1 = v,
                _ => {}
            }
        }
        Ok(m)
    };
    let ops = |i: u32| -> Result<f64> {
        let v: serde_json::Value = serde_json::from_str(line(&format!("COUNT {tag} {i}"))?.trim())?;
        let n = v["iterations"].as_u64().context("no iterations")?;
        let w = v["warmup"].as_u64().context("no warmup")?;
        Ok((n + w) as f64)
    };
    let (s0, s1, s2) = (scrape(0)?, scrape(1)?, scrape(2)?);
    let more = ops(2)? - ops(1)?;
    if more <= 0.0 {
        bail!("{tag}: the second run did no more operations than the first");
    }
    let mut out = Vec::new();
    for (program, (r2, t2)) in &s2 {
        let get = |s: &BTreeMap<String, (f64, f64)>| s.get(program).copied().unwrap_or_default();
        let ((r0, t0), (r1, t1)) = (get(&s0), get(&s1));
        let runs = (r2 - r1) - (r1 - r0);
        let secs = (t2 - t1) - (t1 - t0);
        if runs > 0.0 {
            out.push(Priced { program: program.clone(), runs_per_op: runs / more, ns_per_run: secs * 1e9 / runs });
        }
    }
    Ok(out)
}

/// Two cells of the per-operation table: the programs a loop made run (`none` when it made none run) and their ns
/// per operation.
fn per_op_cells(ran: &[Priced]) -> [String; 2] {
    if ran.is_empty() {
        return ["none".to_owned(), "0".to_owned()];
    }
    let programs = ran.iter().map(|p| format!("{} {:.3}", p.program, p.runs_per_op)).collect::<Vec<_>>();
    let ns: f64 = ran.iter().map(|p| p.runs_per_op * p.ns_per_run).sum();
    [programs.join(", "), format!("{ns:.0}")]
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_become_ratios_per_loop() {
        let line = |v: &str, l: &str, ns: f64| format!("BENCH {v} {l} {{\"cpu_ns_per_op\":{ns}}}\n");
        let out = line("none", "fork", 100.0)
            + &line("none", "syscall", 10.0)
            + &line("mmuscope", "fork", 120.0)
            + &line("mmuscope", "syscall", 10.0)
            + "noise\n"
            + &line("none", "fork", 140.0)
            + &line("none", "syscall", 10.0);
        let r = super::ratios(&out).unwrap();
        let k = |l: &str| (l.to_owned(), "mmuscope".to_owned());
        assert_eq!((r[&k("fork")].clone(), r[&k("syscall")].clone()), (vec![1.0], vec![1.0]));
        let more = out + &line("ksmcow", "fork", 280.0) + &line("none", "fork", 140.0);
        assert_eq!(super::ratios(&more).unwrap()[&("fork".into(), "ksmcow".into())], vec![2.0]);
        assert!(super::ratios("nothing").is_err());
        assert!(super::ratios(&line("mmuscope", "fork", 1.0).repeat(3)).is_err());
    }

    #[test]
    fn run_statistics_become_runs_per_operation() {
        let stats = |i: u32, runs: u64, secs: f64, other: u64| {
            format!(
                "STATS cow {i} mmuscope_bpf_program_run_seconds_total{{program=\"cause_ksm_cow_fentry\"}} {secs} \
                 mmuscope_bpf_program_runs_total{{program=\"cause_ksm_cow_fentry\"}} {runs} \
                 mmuscope_bpf_program_runs_total{{program=\"fork_newtask_fentry\"}} {other} \n"
            )
        };
        // 110 then 210 faults (warm-up included), plus 5 runs per run from elsewhere; the other program runs
        // once per run (the shell's fork), so it drops out.
        let out = stats(0, 1000, 1.0, 7)
            + "COUNT cow 1 {\"iterations\":100,\"warmup\":10}\n"
            + &stats(1, 1115, 1.0 + 115e-6, 8)
            + "COUNT cow 2 {\"iterations\":200,\"warmup\":10}\n"
            + &stats(2, 1330, 1.0 + 330e-6, 9);
        let p = super::per_op(&out, "cow").unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].program, "cause_ksm_cow_fentry");
        assert!((p[0].runs_per_op - 1.0).abs() < 1e-9 && (p[0].ns_per_run - 1000.0).abs() < 1e-3, "{p:?}");
        assert_eq!(super::per_op_cells(&p), ["cause_ksm_cow_fentry 1.000", "1000"]);
        assert_eq!(super::per_op_cells(&[]), ["none", "0"]);
        assert!(super::per_op(&out, "fault").is_err(), "another tag's lines are not this loop's");
        assert!(super::per_op("COUNT cow 1 {}", "cow").is_err());
    }
}
