//! Soak (ignored by default; `cargo xtask soak --minutes N`, 30 by default): the agent for N minutes under churn —
//! every round (at most one a second) a kvm-madvise workload in a fresh cgroup (its count checked exactly, then the
//! cgroup deleted) and 200 more empty cgroups given counts and deleted — with 4 clients scraping `/metrics` all the
//! time. The agent's
//! RSS is sampled every 5 s and its slope (least squares, after the first fifth as warm-up) is reported; it is a
//! benchmark figure, not asserted. Asserted: every workload count exact, no series of a deleted cgroup left after
//! the TTL, the agent alive throughout.
//!
//! Run: `MMUSCOPE_SOAK_MINUTES=3 cargo test -p mmuscope-tests --test hardening_soak -- --ignored --nocapture`.

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mmuscope_tests::cgroup::CgroupPath;
use mmuscope_tests::eco::inject;
use mmuscope_tests::hardening::{kvm_madvise, wrk};
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::harness::{Agent, HostEnv, Scraper, counter_by_cgroup};

const CGROUP_PARENT: &str = "/mmuscope-soak";
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const EMPTY_PER_ROUND: usize = 200;
/// Rounds start at most once per this.
const ROUND: Duration = Duration::from_secs(1);
/// Scrapers running all the time. Few: a scrape that meets a new cgroup walks the whole cgroup tree holding the
/// index lock, which on a host with tens of thousands of cgroups takes seconds (see the bench), and the soak is about
/// memory, not latency.
const CLIENTS: u32 = 4;

fn minutes() -> f64 {
    std::env::var("MMUSCOPE_SOAK_MINUTES").ok().and_then(|v| v.parse().ok()).unwrap_or(30.0)
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// Least-squares slope of (seconds, KiB) in KiB per hour.
fn slope_kib_per_hour(samples: &[(f64, f64)]) -> f64 {
    let n = samples.len() as f64;
    let (mx, my) = (samples.iter().map(|s| s.0).sum::<f64>() / n, samples.iter().map(|s| s.1).sum::<f64>() / n);
    let sxy: f64 = samples.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = samples.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx * 3600.0 }
}

#[test]
#[ignore = "long: cargo xtask soak"]
fn soak_with_churn_reports_the_rss_slope() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    // A deleted cgroup's key stays in the map for the TTL plus a rescan (~12.5 s); at one round per second that is
    // ~2,600 keys, which the 16,384 entries hold with room to spare (4,096 filled up when rounds ran faster).
    let args = ["--cgroups.deleted-ttl", "10s", "--max-cgroups", "0", "--map.stats-entries", "16384"];
    let agent = Agent::start_with(&env.agent_bin, &args, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e:#}"));
    let result = soak(&env, &agent, Duration::from_secs_f64(minutes() * 60.0));
    let tail = agent.output_tail();
    let stopped = agent.stop();
    if let Err(e) = result {
        panic!("{e:#}\n--- agent output tail ---\n{tail}");
    }
    stopped.unwrap_or_else(|e| panic!("{e:#}"));
}

fn soak(env: &HostEnv, agent: &Agent, length: Duration) -> Result<()> {
    let started = Instant::now();
    let pid = agent.pid();
    let mut map = inject::kvm_unmap_counts(pid)?;
    // Latency is the bench's business; a slow scrape (a walk of every cgroup on a crowded host) must not end the soak.
    let scraper = Scraper::with_timeout(&agent.base_url(), Duration::from_secs(120));
    let mut slowest = Duration::ZERO;
    let mut scrape = || -> Result<mmuscope_tests::promtext::Exposition> {
        let t = Instant::now();
        let e = scraper.metrics();
        slowest = slowest.max(t.elapsed());
        e
    };
    let empty_parent = CgroupPath::parse(CGROUP_PARENT)?.join(&format!("empty-{}", std::process::id()))?;
    let empty_base = empty_parent.under(&env.hierarchies.default.mount_point);
    std::fs::create_dir_all(&empty_base)?;
    let load_seconds = u32::try_from(length.as_secs()).unwrap_or(u32::MAX).max(1) + 30;
    let load = wrk::Load::start(&format!("{}/metrics", agent.base_url()), CLIENTS, load_seconds)?;
    let mut samples: Vec<(f64, f64)> = vec![(0.0, rss_kib(pid)? as f64)];
    let mut next_sample = Instant::now() + SAMPLE_EVERY;
    let (mut rounds, mut cgroups) = (0u64, 0u64);
    while started.elapsed() < length {
        let round_started = Instant::now();
        // A workload in a fresh cgroup, checked exactly, then its cgroup deleted (guard dropped).
        let name = format!("w-{}-{rounds}", std::process::id());
        let (guard, truth) = kvm_madvise(env, CGROUP_PARENT, &name, 1_000 + rounds % 100)?;
        let label = truth.cgroups.attributed().path.to_string();
        let expected = truth.expected_tracepoint_total() as f64;
        let got = counter_by_cgroup(&scrape()?, INVALIDATIONS).get(&label).copied().unwrap_or(0.0);
        ensure!(got == expected, "round {rounds}: {label}: {got} != ground truth {expected}");
        drop(guard);
        // 200 empty cgroups with counts, deleted again.
        let mut keys = Vec::with_capacity(EMPTY_PER_ROUND);
        for i in 0..EMPTY_PER_ROUND {
            let d = empty_base.join(format!("c{i:03}"));
            std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            keys.push((mmuscope_abi::key_flags::DEFAULT_HIERARCHY, std::fs::metadata(&d)?.ino()));
        }
        inject::set_counts(&mut map, &keys, 1)?;
        scrape()?;
        for i in 0..EMPTY_PER_ROUND {
            std::fs::remove_dir(empty_base.join(format!("c{i:03}")))?;
        }
        rounds += 1;
        cgroups += 1 + EMPTY_PER_ROUND as u64;
        // A steady churn rate, whatever the machine's speed: the key count in the maps depends on it.
        std::thread::sleep(ROUND.saturating_sub(round_started.elapsed()));
        if Instant::now() >= next_sample {
            samples.push((started.elapsed().as_secs_f64(), rss_kib(pid)? as f64));
            next_sample += SAMPLE_EVERY;
        }
    }
    // After the TTL (10 s) and a rescan, nothing of the deleted cgroups is left.
    std::thread::sleep(Duration::from_secs(15));
    let e = scrape()?;
    let prefix = format!("{CGROUP_PARENT}/");
    let stale = counter_by_cgroup(&e, INVALIDATIONS).keys().filter(|c| c.starts_with(&prefix)).count();
    let _ = std::fs::remove_dir(&empty_base);
    let _ = std::fs::remove_dir(
        empty_parent.parent().map(|p| p.under(&env.hierarchies.default.mount_point)).unwrap_or_default(),
    );
    load.stop(); // it outlasts the soak by design
    let warm = samples.len() / 5;
    let slope = slope_kib_per_hour(&samples[warm..]);
    let (first, last) = (samples[warm].1, samples.last().map_or(0.0, |s| s.1));
    let peak = samples.iter().map(|s| s.1).fold(0.0, f64::max);
    println!(
        "soak: {:.1} min, {rounds} rounds, {cgroups} cgroups created and deleted, {} RSS samples; RSS after warm-up \
         {:.1} MiB → end {:.1} MiB (peak {:.1} MiB); slope {:+.0} KiB/h; stale series after TTL: {stale}; slowest scrape {:.1} s",
        started.elapsed().as_secs_f64() / 60.0,
        samples.len(),
        first / 1024.0,
        last / 1024.0,
        peak / 1024.0,
        slope,
        slowest.as_secs_f64()
    );
    ensure!(stale == 0, "{stale} series of deleted cgroups left after the TTL");
    Ok(())
}
