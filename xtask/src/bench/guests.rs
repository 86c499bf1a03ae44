//! `guests`: the madvise loop (a KVM notifier: something to see) and the `unrelated` loops (nothing to see) in QEMU
//! guests (Debian 6.1 and 6.12, TCG, one vCPU) with the agent in fentry and kprobe mode, as ratios only: TCG's
//! absolute times mean nothing. One boot per kernel × mode; inside it each round runs every loop without the agent,
//! with it, and without it again, and a loop's ratio in the round is the middle run over the mean of the two outer
//! ones, in the process's CPU time (the agent's own threads share the one vCPU). No floor and no bpftrace here (the
//! guest has neither), so these are slowdowns.

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
    let (mut madvise_rows, mut unrelated_rows) = (Vec::new(), Vec::new());
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
                let r = ratios.get(l.name).with_context(|| format!("{k} × {mode}: no runs of {}", l.name))?;
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
    ];
    Ok(b.report("guests", "Probe cost in QEMU guests (fentry, kprobe): ratios", tables, vec![], raw))
}

/// The guest's command: `runs` rounds of none / agent / none, each running every loop once and printing
/// `BENCH <variant> <loop> <json>` per run.
fn script(mode: &str, loops: &[GuestLoop], runs: usize) -> String {
    let all: String = loops.iter().map(|l| format!("  echo \"BENCH $1 {} $({})\"\n", l.name, l.command())).collect();
    format!(
        r#"set -e
all() {{
{all}}}
start() {{
  /bin/mmuscope run --mode {mode} --web.listen-address 127.0.0.1:9476 >/tmp/agent.log 2>&1 &
  AGENT=$!; n=0
  until wget -q -O /dev/null http://127.0.0.1:9476/readyz 2>/dev/null; do
    n=$((n+1)); if [ $n -gt 1200 ] || ! kill -0 $AGENT 2>/dev/null; then cat /tmp/agent.log; exit 3; fi; sleep 0.5
  done
}}
stop() {{ kill $AGENT; wait $AGENT || true; sleep 1; }}
r=0
while [ $r -lt {runs} ]; do
  all none; start; all mmuscope; stop; all none; r=$((r+1))
done
"#
    )
}

/// Per loop and round: the agent run over the mean of the runs before and after it (CPU time).
fn ratios(output: &str) -> Result<BTreeMap<String, Vec<f64>>> {
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
    runs.into_iter()
        .map(|(name, r)| {
            if !r.len().is_multiple_of(3)
                || r.chunks(3).any(|c| (&*c[0].0, &*c[1].0, &*c[2].0) != ("none", "mmuscope", "none"))
            {
                bail!(
                    "{name}: expected rounds of none, mmuscope, none; got {:?}",
                    r.iter().map(|x| &x.0).collect::<Vec<_>>()
                );
            }
            Ok((name, r.chunks(3).map(|c| c[1].1 / ((c[0].1 + c[2].1) / 2.0)).collect()))
        })
        .collect()
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
        assert_eq!((r["fork"].clone(), r["syscall"].clone()), (vec![1.0], vec![1.0]));
        assert!(super::ratios("nothing").is_err());
        assert!(super::ratios(&line("mmuscope", "fork", 1.0).repeat(3)).is_err());
    }
}
