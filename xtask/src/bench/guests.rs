//! `guests`: the madvise loop in QEMU guests (Debian 6.1 and 6.12, TCG, one vCPU) with the agent in fentry and
//! kprobe mode, as ratios only: TCG's absolute times mean nothing. One boot per kernel × mode; inside it each round
//! runs the loop without the agent, with it, and without it again, and the round's ratio is the middle run over the
//! mean of the two outer ones. No floor and no bpftrace here (the guest has neither), so these are slowdowns.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::Bench;
use super::report::{Report, Table};
use crate::vm::{self, GuestOptions, initramfs::GuestFile};

const KERNELS: [&str; 2] = ["6.1", "6.12"];
const MODES: [&str; 2] = ["fentry", "kprobe"];

pub fn run(b: &Bench) -> Result<Report> {
    let iterations = if b.quick { 500 } else { 20_000 };
    let files = vec![
        GuestFile { host: b.bins.agent.clone(), guest: PathBuf::from("/bin/mmuscope") },
        GuestFile { host: b.bins.workload.clone(), guest: PathBuf::from("/bin/mmuscope-workload") },
    ];
    let kernels: &[&str] = if b.quick { &KERNELS[..1] } else { &KERNELS };
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut rows = Vec::new();
    for k in kernels {
        let kernel = vm::kernel(b.ws, &k.parse()?)?;
        for mode in MODES {
            let opts = GuestOptions {
                label: format!("bench-{mode}"),
                memory_mib: 1024,
                cpus: 1,
                timeout: Duration::from_secs(1200),
                echo: false,
            };
            let cmd = vec!["sh".to_owned(), "-c".to_owned(), script(mode, iterations, b.runs)];
            let done = vm::run_in_guest(b.ws, &kernel, &files, &cmd, &opts)?;
            if done.status != 0 {
                bail!("{k} × {mode}: the guest script exited {}:\n{}", done.status, done.output);
            }
            let ratios = ratios(&done.output).with_context(|| format!("{k} × {mode}:\n{}", done.output))?;
            b.say(format!("{} × {mode}: ratios {ratios:.3?}", kernel.meta.release));
            let key = format!("{k}_{mode}");
            raw.insert(key.clone(), ratios);
            let s = b.stats(&raw, &key)?;
            rows.push(vec![
                kernel.meta.release.clone(),
                mode.into(),
                s.show(3),
                format!("{:+.1}", (s.median - 1.0) * 100.0),
            ]);
        }
    }
    let tables = vec![Table {
        title: format!("madvise loop with / without the agent, per round ({iterations} rounds per run, TCG)"),
        columns: vec!["kernel".into(), "mode".into(), "ratio median (min–max)".into(), "slowdown %".into()],
        rows,
    }];
    Ok(b.report("guests", "Probe cost in QEMU guests (fentry, kprobe): ratios", tables, vec![], raw))
}

/// The guest's command: `runs` rounds of none / agent / none, each run printing `BENCH <variant> <json>`.
fn script(mode: &str, iterations: u64, runs: usize) -> String {
    format!(
        r#"set -e
one() {{ echo "BENCH $1 $(/bin/mmuscope-workload bench-madvise --iterations {iterations})"; }}
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
  one none; start; one mmuscope; stop; one none; r=$((r+1))
done
"#
    )
}

/// Per round: the agent run over the mean of the runs before and after it.
fn ratios(output: &str) -> Result<Vec<f64>> {
    let runs: Vec<(String, f64)> = output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BENCH "))
        .map(|l| {
            let (variant, json) = l.split_once(' ').context("malformed BENCH line")?;
            let v: serde_json::Value = serde_json::from_str(json).with_context(|| format!("parsing {json}"))?;
            Ok((variant.to_owned(), v["ns_per_op"].as_f64().context("no ns_per_op")?))
        })
        .collect::<Result<_>>()?;
    if runs.is_empty() || !runs.len().is_multiple_of(3) {
        bail!("expected rounds of three BENCH lines, got {}", runs.len());
    }
    Ok(runs.chunks(3).map(|c| c[1].1 / ((c[0].1 + c[2].1) / 2.0)).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rounds_become_ratios() {
        let line = |v: &str, ns: f64| format!("BENCH {v} {{\"ns_per_op\":{ns}}}\n");
        let out = line("none", 100.0) + &line("mmuscope", 120.0) + &line("none", 140.0) + "noise\n";
        assert_eq!(super::ratios(&out).unwrap(), vec![1.0]);
        assert!(super::ratios("nothing").is_err());
    }
}
