//! `mmuscope snapshot [--json]`: the API's view, fetched once.

use std::io::Write;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Client, SnapshotArgs};

pub fn run(args: &SnapshotArgs) -> Result<i32> {
    let client = Client::new(&args.client)?;
    let status: Value = client.get("/api/v1/status")?;
    let cgroups: Value = client.get(&format!("/api/v1/cgroups?sort={}&limit={}", args.sort, args.limit))?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &json!({ "status": status, "cgroups": cgroups }))?;
        writeln!(out)?;
        return Ok(0);
    }
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    writeln!(
        out,
        "agent {} at {} — kernel {}, up {:.0} s",
        s(&status["version"]),
        client.base(),
        s(&status["kernel_release"]),
        status["uptime_seconds"].as_f64().unwrap_or(0.0)
    )?;
    writeln!(
        out,
        "cgroups: {} tracked, {} aggregated into \"other\" so far; {} with activity",
        status["cgroups"]["tracked"].as_u64().unwrap_or(0),
        status["cgroups"]["overflow_total"].as_u64().unwrap_or(0),
        cgroups["total"].as_u64().unwrap_or(0)
    )?;
    writeln!(out, "{:>12} {:>10} {:>12}  CGROUP", "INVALIDATIONS", "P99", "FORK COPIES")?;
    for c in cgroups["cgroups"].as_array().into_iter().flatten() {
        let p99 = c["latency"]["p99_seconds"].as_f64().map_or("-".to_string(), super::human_seconds);
        let fork = c["fork_pinned_page_copies"].as_u64().map_or("-".to_string(), |n| n.to_string());
        let mut name = s(&c["cgroup"]);
        if !s(&c["pod"]).is_empty() {
            name = format!("{}/{}/{} ({name})", s(&c["namespace"]), s(&c["pod"]), s(&c["container"]));
        }
        writeln!(out, "{:>12} {:>10} {:>12}  {name}", c["invalidations"].as_u64().unwrap_or(0), p99, fork)?;
    }
    Ok(0)
}
