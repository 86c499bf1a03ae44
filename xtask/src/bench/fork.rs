//! `fork`: fork() of a process with 64 MiB pinned through io_uring (every pinned page is copied at fork), with and
//! without the agent attached (in tracepoint mode its `mm_page_alloc` program runs for each copied page), plus the
//! unpinned fork for scale. Rounds alternate the order; each run times several forks and keeps their median.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::Bench;
use super::procs::{self, Agent};
use super::report::{Report, Table};

pub fn run(b: &Bench) -> Result<Report> {
    let (mib, forks) = if b.quick { ("4", "2") } else { ("64", "5") };
    let mut raw: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..b.runs {
        b.await_quiet_host();
        let mut ms = BTreeMap::new();
        for i in 0..2 {
            let with_agent = (i + round) % 2 == 1;
            let agent = if with_agent { Some(Agent::start(&b.bins.agent, b.other_cpu, &[])?) } else { None };
            let v = procs::run_json(b.cpu, &b.bins.workload, &["bench-fork", "--mib", mib, "--forks", forks])?;
            drop(agent);
            let key = if with_agent { "pinned_mmuscope" } else { "pinned_none" };
            ms.insert(key, v["ns_per_fork_median"].as_f64().context("no ns_per_fork_median")? / 1e6);
        }
        let v =
            procs::run_json(b.cpu, &b.bins.workload, &["bench-fork", "--mib", mib, "--forks", forks, "--unpinned"])?;
        ms.insert("unpinned_none", v["ns_per_fork_median"].as_f64().context("no ns_per_fork_median")? / 1e6);
        b.say(format!(
            "round {}/{}: pinned {:.2} ms, pinned + mmuscope {:.2} ms, unpinned {:.3} ms",
            round + 1,
            b.runs,
            ms["pinned_none"],
            ms["pinned_mmuscope"],
            ms["unpinned_none"]
        ));
        for (k, v) in &ms {
            raw.entry((*k).into()).or_default().push(*v);
        }
        raw.entry("mmuscope_over_none".into()).or_default().push(ms["pinned_mmuscope"] / ms["pinned_none"]);
    }
    let st = |k: &str| b.stats(&raw, k);
    let rows = vec![
        vec![format!("{mib} MiB pinned"), "none".into(), st("pinned_none")?.show(2)],
        vec![format!("{mib} MiB pinned"), "mmuscope".into(), st("pinned_mmuscope")?.show(2)],
        vec![format!("{mib} MiB unpinned"), "none".into(), st("unpinned_none")?.show(3)],
    ];
    let tables = vec![
        Table {
            title: format!("ms per fork() (median of {forks} forks per run)"),
            columns: vec!["memory".into(), "attached".into(), "ms median (min–max)".into()],
            rows,
        },
        Table {
            title: "Ratio per round".into(),
            columns: vec!["ratio".into(), "value".into()],
            rows: vec![vec!["pinned fork with mmuscope / without".into(), st("mmuscope_over_none")?.show(3)]],
        },
    ];
    Ok(b.report("fork", "fork() with 64 MiB pinned by io_uring", tables, vec![], raw))
}
