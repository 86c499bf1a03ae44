//! `agent`: the agent's own cost (release build, tracepoint mode, `--map.stats-entries 16384` so 10k cgroups fit):
//! time from start to `/readyz` 200; RSS and CPU idle and at one `/metrics` scrape per second with 0, 1k and 10k
//! cgroups that have counts; `/metrics` latency p50/p99 under wrk with 10 connections.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::procs::{self, Agent};
use super::report::{Report, Table, Target};
use super::{Bench, fixture, http};

const AGENT_ARGS: [&str; 2] = ["--map.stats-entries", "16384"];
const MIB: f64 = 1024.0 * 1024.0;
/// `/metrics` p99 under wrk at the top level (issue 21; issue 7 had 50 ms).
const P99_TARGET_MS: f64 = 25.0;

pub fn run(b: &Bench) -> Result<Report> {
    let (levels, window, wrk_secs): (&[usize], u64, u64) =
        if b.quick { (&[0, 100], 2, 1) } else { (&[0, 1_000, 10_000], 10, 5) };
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut push = |k: String, v: f64| raw.entry(k).or_default().push(v);
    for round in 0..b.runs {
        for &n in levels {
            let agent = Agent::start(&b.bins.agent, b.other_cpu, &AGENT_ARGS)?;
            push(format!("ready_s@{n}"), agent.ready_after.as_secs_f64());
            let cgroups = if n > 0 { Some(fixture::cgroups(b, agent.pid(), n)?) } else { None };
            // One scrape first: it resolves the new cgroups' paths, which steady-state scrapes then reuse.
            let (code, body) = http::get(agent.addr, "/metrics")?;
            if code != 200 {
                bail!("/metrics: HTTP {code}");
            }
            let series = body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
            push(format!("series@{n}"), series as f64);
            let pid = agent.pid();
            let c0 = procs::cpu_seconds(pid)?;
            std::thread::sleep(Duration::from_secs(window));
            push(format!("idle_cpu_pct@{n}"), (procs::cpu_seconds(pid)? - c0) / window as f64 * 100.0);
            push(format!("idle_rss_mib@{n}"), procs::rss_bytes(pid)? / MIB);
            let (c0, t0) = (procs::cpu_seconds(pid)?, Instant::now());
            for s in 0..window {
                let t = Instant::now();
                let (code, _) = http::get(agent.addr, "/metrics")?;
                if code != 200 {
                    bail!("/metrics: HTTP {code}");
                }
                push(format!("scrape_ms@{n}"), t.elapsed().as_secs_f64() * 1e3);
                let next = Duration::from_secs(s + 1);
                std::thread::sleep(next.saturating_sub(t0.elapsed()));
            }
            push(format!("scrape_cpu_pct@{n}"), (procs::cpu_seconds(pid)? - c0) / t0.elapsed().as_secs_f64() * 100.0);
            push(format!("scrape_rss_mib@{n}"), procs::rss_bytes(pid)? / MIB);
            let (p50, p99, rps) = wrk(b, agent.addr, wrk_secs)?;
            push(format!("wrk_p50_ms@{n}"), p50);
            push(format!("wrk_p99_ms@{n}"), p99);
            push(format!("wrk_rps@{n}"), rps);
            push(format!("peak_rss_mib@{n}"), procs::peak_rss_bytes(pid)? / MIB);
            b.say(format!(
                "round {}/{}, {n} cgroups: {series} series, wrk p50 {p50:.1} ms p99 {p99:.1} ms",
                round + 1,
                b.runs
            ));
            drop(cgroups);
            drop(agent);
        }
    }
    build_report(b, levels, raw)
}

/// `wrk --latency` with 10 connections on one thread, pinned to the CPU the agent does not use:
/// (p50 ms, p99 ms, requests/s).
fn wrk(b: &Bench, addr: std::net::SocketAddr, secs: u64) -> Result<(f64, f64, f64)> {
    let out = std::process::Command::new("taskset")
        .args(["-c", &b.cpu.to_string(), "wrk", "-t1", "-c10", &format!("-d{secs}s"), "--latency", "--timeout", "10s"])
        .arg(format!("http://{addr}/metrics"))
        .output()
        .context("running wrk (apt-get install wrk, or `cargo xtask setup --group bench`)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("parsing wrk's output:\n{text}{}", String::from_utf8_lossy(&out.stderr)))
}

fn parse_wrk(text: &str) -> Option<(f64, f64, f64)> {
    let pct = |p: &str| {
        text.lines().find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(p)).then(|| w.next()).flatten().and_then(duration_ms)
        })
    };
    let rps = text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse().ok());
    Some((pct("50%")?, pct("99%")?, rps?))
}

/// wrk's `812.00us`, `1.23ms`, `2.00s` in ms.
fn duration_ms(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    Some(match unit {
        "us" => n / 1e3,
        "ms" => n,
        "s" => n * 1e3,
        "m" => n * 60e3,
        _ => return None,
    })
}

fn build_report(b: &Bench, levels: &[usize], raw: BTreeMap<String, Vec<f64>>) -> Result<Report> {
    let st = |k: &str| b.stats(&raw, k);
    let mut rows = Vec::new();
    for n in levels {
        let s = |k: &str, d: usize| st(&format!("{k}@{n}")).map(|s| s.show(d));
        rows.push(vec![
            n.to_string(),
            s("series", 0)?,
            s("idle_rss_mib", 1)?,
            s("scrape_rss_mib", 1)?,
            s("peak_rss_mib", 1)?,
            s("idle_cpu_pct", 2)?,
            s("scrape_cpu_pct", 2)?,
            s("scrape_ms", 1)?,
            s("wrk_p50_ms", 1)?,
            s("wrk_p99_ms", 1)?,
            s("wrk_rps", 0)?,
        ]);
    }
    let columns = [
        "cgroups",
        "series",
        "RSS idle MiB",
        "RSS at 1 scrape/s MiB",
        "peak RSS (VmHWM) MiB",
        "CPU idle %",
        "CPU at 1 scrape/s %",
        "single scrape ms",
        "wrk p50 ms",
        "wrk p99 ms",
        "wrk req/s",
    ];
    let ready: Vec<f64> = levels.iter().flat_map(|n| raw[&format!("ready_s@{n}")].clone()).collect();
    let ready = super::stats::Stats::of(&ready).context("no ready samples")?;
    let top = levels.last().copied().unwrap_or(0);
    let rss = st(&format!("scrape_rss_mib@{top}"))?;
    let peak = st(&format!("peak_rss_mib@{top}"))?;
    let p99 = st(&format!("wrk_p99_ms@{top}"))?;
    let tables = vec![
        Table {
            title: "Agent cost by number of cgroups with counts (median (min–max) over runs)".into(),
            columns: columns.map(String::from).to_vec(),
            rows,
        },
        Table {
            title: "Start to ready (/readyz 200), every agent start of the run".into(),
            columns: vec!["seconds median (min–max)".into(), "n".into()],
            rows: vec![vec![ready.show(3), ready.n.to_string()]],
        },
    ];
    let targets = vec![
        Target {
            target: format!("RSS ≤ 40 MiB at {top} cgroups"),
            measured: format!("{:.1} MiB at 1 scrape/s, peak {:.1} MiB (medians)", rss.median, peak.median),
            met: rss.median <= 40.0 && peak.median <= 40.0,
        },
        Target {
            target: format!("/metrics p99 ≤ {P99_TARGET_MS} ms at {top} cgroups"),
            measured: format!("{:.1} ms (median of runs; max {:.1})", p99.median, p99.max),
            met: p99.median <= P99_TARGET_MS,
        },
        Target {
            target: "ready ≤ 2 s after start".into(),
            measured: format!("{:.3} s median, max {:.3} s", ready.median, ready.max),
            met: ready.max <= 2.0,
        },
    ];
    Ok(b.report("agent", "The agent's own cost", tables, targets, raw))
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_latency_distribution_is_parsed() {
        let text = "  Latency Distribution\n     50%  812.00us\n     75%    1.23ms\n     90%    2.00ms\n     \
                    99%    1.50s\n  1234 requests in 5.00s, 1.00MB read\nRequests/sec:    246.80\n";
        assert_eq!(super::parse_wrk(text), Some((0.812, 1500.0, 246.8)));
        assert_eq!(super::parse_wrk("no latency"), None);
    }
}
