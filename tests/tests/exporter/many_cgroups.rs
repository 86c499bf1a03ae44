//! 10,000 real cgroups with counts in the agent's map: `/metrics` stays promtool-clean, `--max-cgroups` holds, the
//! overflow is counted and nothing is lost in the aggregation; and `/metrics` compressed as Prometheus asks for it.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use mmuscope_tests::cgroup::{CgroupPath, Hierarchies};
use mmuscope_tests::eco::{inject, prometheus, tools};
use mmuscope_tests::harness::{Agent, counter_by_cgroup};
use mmuscope_tests::promtext::Exposition;

use super::{CGROUP_PARENT, INVALIDATIONS, READY_TIMEOUT, require};

#[test]
fn ten_thousand_cgroups_stay_promtool_clean_and_capped() {
    let Some(env) = require(&[("promtool", "MMUSCOPE_PROMTOOL"), ("curl", "MMUSCOPE_CURL")]) else { return };
    const N: usize = 10_000;
    const MAX: usize = 1_000;
    const COUNT: u64 = 3;
    let max = MAX.to_string();
    let agent =
        Agent::start_with(&env.agent_bin, &["--max-cgroups", &max, "--map.stats-entries", "16384"], READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{e:#}"));
    let parent = format!("eco-10k-{}", std::process::id());
    let hierarchies = env.hierarchies.clone();
    let result = many_cgroups_case(&agent, &hierarchies, &parent, N, MAX, COUNT);
    // Remove the cgroups whatever happened (children first).
    let base = CgroupPath::parse(CGROUP_PARENT)
        .and_then(|p| p.join(&parent))
        .map(|p| p.under(&hierarchies.default.mount_point));
    if let Ok(base) = base {
        for i in 0..N {
            let _ = std::fs::remove_dir(base.join(format!("c{i:05}")));
        }
        let _ = std::fs::remove_dir(&base);
    }
    agent.finish(result);
}

fn many_cgroups_case(agent: &Agent, h: &Hierarchies, parent: &str, n: usize, max: usize, count: u64) -> Result<()> {
    // Real cgroups in the default (v2) hierarchy, no controllers: cheap to create; keys flagged DEFAULT_HIERARCHY.
    let rel = CgroupPath::parse(CGROUP_PARENT)?.join(parent)?;
    let base = rel.under(&h.default.mount_point);
    std::fs::create_dir_all(&base).with_context(|| format!("mkdir {}", base.display()))?;
    let t = Instant::now();
    let mut keys = Vec::with_capacity(n);
    for i in 0..n {
        let d = base.join(format!("c{i:05}"));
        std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
        keys.push((mmuscope_abi::key_flags::DEFAULT_HIERARCHY, std::fs::metadata(&d)?.ino()));
    }
    println!("created {n} cgroups under {} in {:.1} s", base.display(), t.elapsed().as_secs_f64());

    let before = Exposition::parse(&agent.scraper().get("/metrics")?.1)?;
    let total_before: f64 = before.samples_named(INVALIDATIONS).map(|s| s.value).sum::<f64>() + 0.0;
    let entries_before = before
        .samples_named("mmuscope_map_entries")
        .find(|s| s.labels.get("map").map(String::as_str) == Some("kvm_unmap_counts"))
        .map_or(0.0, |s| s.value);
    let mut map = inject::kvm_unmap_counts(agent.pid())?;
    inject::set_counts(&mut map, &keys, count)?;

    let t = Instant::now();
    let (code, text) = agent.scraper().get("/metrics")?;
    let scrape = t.elapsed();
    ensure!(code == 200, "/metrics: HTTP {code}");
    let e = Exposition::parse(&text)?;
    let gauge = |name: &str| e.samples_named(name).map(|s| s.value).sum::<f64>();
    let ours = format!("{}/", rel.as_str());
    let by_cgroup: BTreeMap<String, f64> = counter_by_cgroup(&e, INVALIDATIONS);
    let own_series = by_cgroup.keys().filter(|c| c.starts_with(&ours)).count();
    let total_after: f64 = e.samples_named(INVALIDATIONS).map(|s| s.value).sum();
    let other = by_cgroup.get("other").copied().unwrap_or(0.0);
    let (tracked, overflow) = (gauge("mmuscope_cgroups_tracked"), gauge("mmuscope_cgroups_overflow_total"));
    let entries = e
        .samples_named("mmuscope_map_entries")
        .find(|s| s.labels.get("map").map(String::as_str) == Some("kvm_unmap_counts"))
        .map(|s| s.value);
    println!(
        "GET /metrics with {n} injected cgroups: {} bytes, {} series, {:.0} ms",
        text.len(),
        e.samples.len(),
        scrape.as_secs_f64() * 1e3
    );
    println!("  map_entries{{map=\"kvm_unmap_counts\"}} = {entries:?}");
    println!("  cgroups_tracked = {tracked} (--max-cgroups {max}), cgroups_overflow_total = {overflow}");
    println!("  our cgroups with their own series: {own_series}; cgroup=\"other\" = {other}");
    println!("  sum of {INVALIDATIONS}: before {total_before}, after {total_after} (injected {})", n as u64 * count);
    let report = prometheus::promtool_check_metrics(&text)?;
    println!(
        "  promtool check metrics: clean{}",
        if report.trim().is_empty() { String::new() } else { format!(": {report}") }
    );

    // Exact over the injection, like the total below (nothing else adds keys between the two scrapes): n new keys.
    ensure!(
        entries == Some(entries_before + n as f64),
        "map_entries {entries:?}, expected {entries_before} before + the {n} injected keys"
    );
    // Each of our cgroups that has its own series shows exactly the count injected into its key.
    let wrong: Vec<(&String, &f64)> =
        by_cgroup.iter().filter(|(c, v)| c.starts_with(&ours) && **v != count as f64).take(5).collect();
    ensure!(wrong.is_empty(), "our cgroups' own series must each be {count}: {wrong:?}");
    // Ranges, because the cap and the overflow are shared with the cgroups of this host that had counts before
    // (other VMs on a shared machine, a number this test cannot know): they take tracked slots and overflow too.
    ensure!(tracked == max as f64, "cgroups_tracked {tracked}, expected the cap {max}");
    ensure!(own_series <= max, "{own_series} of our cgroups have their own series, cap {max}");
    ensure!(overflow >= (n - max) as f64, "cgroups_overflow_total {overflow} < {}", n - max);
    ensure!(
        total_after - total_before == (n as u64 * count) as f64,
        "aggregation lost or invented counts: {total_before} → {total_after}, injected {}",
        n as u64 * count
    );
    let distinct_cgroups: std::collections::BTreeSet<&String> =
        e.samples.iter().filter_map(|s| s.labels.get("cgroup")).collect();
    ensure!(
        distinct_cgroups.len() <= max + 2,
        "{} distinct cgroup label values (cap {max} + other + unknown)",
        distinct_cgroups.len()
    );
    gzip_case(agent, total_after)?;

    // The API is not capped: all of ours are there, most marked as aggregated.
    let (code, body) = agent.scraper().get("/api/v1/cgroups?limit=10000&sort=id")?;
    ensure!(code == 200, "API: HTTP {code}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    let list = v["cgroups"].as_array().context("cgroups")?;
    let ours_api = list.iter().filter(|c| c["cgroup"].as_str().is_some_and(|p| p.starts_with(&ours))).count();
    let aggregated = list.iter().filter(|c| c["aggregated"] == true).count();
    println!("  /api/v1/cgroups: total {}, ours in the first 10000: {ours_api}, aggregated: {aggregated}", v["total"]);
    // Ranges for the same reason: the API lists this host's other cgroups with counts too.
    ensure!(v["total"].as_u64().is_some_and(|t| t >= n as u64), "API total {} < {n}", v["total"]);
    if aggregated < n - max - 1 {
        bail!("API marks only {aggregated} cgroups as aggregated");
    }
    Ok(())
}

/// `/metrics` as Prometheus asks for it (`Accept-Encoding: gzip`) with the 10k cgroups in place: compressed, the same
/// samples once decompressed, and the agent's CPU time per scrape with and without compression.
fn gzip_case(agent: &Agent, invalidations: f64) -> Result<()> {
    const ROUNDS: usize = 20;
    let bin = tools::require(&[("curl", "MMUSCOPE_CURL")])?.remove(0);
    let url = format!("{}/metrics", agent.base_url());
    // (response headers, lower-cased; bytes on the wire)
    let fetch = |gzip: bool| -> Result<(String, u64)> {
        let mut c = Command::new(&bin);
        c.args(["-sS", "--max-time", "10", "-D", "-", "-o", "/dev/null", "-w", "%{size_download}\n"]);
        if gzip {
            c.args(["-H", "Accept-Encoding: gzip"]);
        }
        let out = c.arg(&url).output()?;
        ensure!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, size) = text.trim_end().rsplit_once('\n').context("curl output")?;
        Ok((head.to_ascii_lowercase(), size.trim().parse()?))
    };
    // utime + stime of the agent, in seconds.
    let cpu = || -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", agent.pid()))?;
        let fields: Vec<&str> = stat.rsplit_once(')').context("/proc/PID/stat")?.1.split_whitespace().collect();
        let ticks = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        // SAFETY: sysconf has no preconditions.
        Ok(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
    };
    let mut runs = Vec::new();
    for gzip in [false, true] {
        let before = cpu()?;
        let mut last = (String::new(), 0);
        for _ in 0..ROUNDS {
            last = fetch(gzip)?;
        }
        runs.push((last, (cpu()? - before) / ROUNDS as f64));
    }
    let (((plain_head, plain_bytes), plain_cpu), ((gzip_head, gzip_bytes), gzip_cpu)) = (&runs[0], &runs[1]);
    println!(
        "  gzip: {plain_bytes} -> {gzip_bytes} bytes ({:.1}x); agent CPU per scrape {:.1} ms plain, {:.1} ms gzip",
        *plain_bytes as f64 / (*gzip_bytes).max(1) as f64,
        plain_cpu * 1e3,
        gzip_cpu * 1e3
    );
    ensure!(gzip_head.contains("content-encoding: gzip"), "asked for gzip, got: {gzip_head}");
    ensure!(!plain_head.contains("content-encoding"), "gzip without being asked: {plain_head}");
    ensure!(gzip_bytes * 5 < *plain_bytes, "gzip ratio below 5: {plain_bytes} -> {gzip_bytes}");
    // Decompressed (curl --compressed), the same counts.
    let out = Command::new(&bin).args(["-sS", "--max-time", "10", "--compressed", &url]).output()?;
    let e = Exposition::parse(&String::from_utf8_lossy(&out.stdout))?;
    let total: f64 = e.samples_named(INVALIDATIONS).map(|s| s.value).sum();
    ensure!(total == invalidations, "decompressed exposition: {INVALIDATIONS} sum {total}, plain {invalidations}");
    Ok(())
}
