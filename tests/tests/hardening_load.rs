//! Hardening, load (root, /dev/kvm): 200 concurrent clients (wrk: 100 on `/metrics`, 100 on `/api/v1/cgroups`) for
//! `MMUSCOPE_LOAD_SECONDS` (default 10; `cargo xtask soak` runs 60) while kvm-madvise workloads run in fresh
//! cgroups: no socket errors, no non-2xx answer, and afterwards every workload's count equals its ground truth.
//!
//! Run: `cargo test -p mmuscope-tests --test hardening_load -- --test-threads=1 --nocapture` (`host` tier).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mmuscope_tests::hardening::{kvm_madvise, wrk};
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::harness::{Agent, HostEnv, counter_by_cgroup, scrape_until};
use mmuscope_tests::promtext::Exposition;

const CGROUP_PARENT: &str = "/mmuscope-hardening";

fn load_seconds() -> u32 {
    std::env::var("MMUSCOPE_LOAD_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10)
}

#[test]
fn two_hundred_clients_get_no_errors_and_counts_stay_exact() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let agent = Agent::start(&env.agent_bin, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e:#}"));
    let result = load_case(&env, &agent, load_seconds());
    let tail = agent.output_tail();
    let stopped = agent.stop();
    if let Err(e) = result {
        panic!("{e:#}\n--- agent output tail ---\n{tail}");
    }
    stopped.unwrap_or_else(|e| panic!("{e:#}"));
}

fn load_case(env: &HostEnv, agent: &Agent, seconds: u32) -> Result<()> {
    let base = agent.base_url();
    let t = Instant::now();
    let metrics = wrk::Load::start(&format!("{base}/metrics"), 100, seconds)?;
    let api = wrk::Load::start(&format!("{base}/api/v1/cgroups?limit=100"), 100, seconds)?;
    // Workloads while the clients hammer the agent, until the load is over.
    let mut runs = Vec::new();
    let mut i = 0u64;
    while t.elapsed() < Duration::from_secs(u64::from(seconds).saturating_sub(1).max(1)) {
        let name = format!("load-{}-{i}", std::process::id());
        runs.push(kvm_madvise(env, CGROUP_PARENT, &name, 5_000 + i)?);
        i += 1;
    }
    let (m, a) = (metrics.finish()?, api.finish()?);
    for (what, s) in [("/metrics", &m), ("/api/v1/cgroups", &a)] {
        println!(
            "wrk 100 connections on {what} for {seconds} s: {} requests ({:.0}/s), socket errors {:?}, non-2xx {}",
            s.requests,
            s.requests as f64 / f64::from(seconds),
            s.socket_errors,
            s.non_2xx
        );
        ensure!(s.socket_errors == [0; 4] && s.non_2xx == 0, "{what} under load:\n{}", s.raw);
    }
    // Each workload has exited, so its events happened; scrape until every count has reached its truth.
    let reached = |e: &Exposition| {
        let counts = counter_by_cgroup(e, INVALIDATIONS);
        runs.iter().all(|(_, t)| {
            counts.get(&t.cgroups.attributed().path.to_string()).copied().unwrap_or(0.0)
                >= t.expected_tracepoint_total() as f64
        })
    };
    let counts = counter_by_cgroup(&scrape_until(&agent.scraper(), Duration::from_secs(10), reached)?, INVALIDATIONS);
    let mut wrong = Vec::new();
    println!("{:<44} {:>12} {:>12}", "workload cgroup (ran during the load)", "ground truth", "/metrics");
    for (_guard, truth) in &runs {
        let label = truth.cgroups.attributed().path.to_string();
        let expected = truth.expected_tracepoint_total() as f64;
        let got = counts.get(&label).copied().unwrap_or(0.0);
        println!("{label:<44} {expected:>12} {got:>12}");
        if got != expected {
            wrong.push(format!("{label}: {got} != {expected}"));
        }
    }
    ensure!(!runs.is_empty() && wrong.is_empty(), "counts after load: {wrong:?}");
    Ok(())
}
