//! Ecosystem integration tests (root, /dev/kvm, this machine's kernel; the `eco` tier): the agent in tracepoint mode
//! against the real tools its users run —
//!
//! * a Prometheus server scrapes it while the workload runs; instant queries for the workload's cgroup equal the
//!   ground truth exactly, and `promtool check metrics` finds nothing;
//! * schemathesis fuzzes the JSON API from its own OpenAPI document (no 5xx, responses conform);
//! * TLS and basic auth from `--web.config.file`, checked with curl (and `mmuscope snapshot`), including a client-CA
//!   change picked up without a restart;
//! * 10,000 real cgroups with counts in the agent's map: `/metrics` stays promtool-clean, `--max-cgroups` holds,
//!   the overflow is counted and nothing is lost in the aggregation;
//! * `mmuscope top` in tmux shows the workload's cgroup with its figures.
//!
//! Run: `cargo test -p mmuscope-tests --test exporter -- --test-threads=1 --nocapture` (`cargo xtask test --tier eco`
//! sets the tools up). Outside CI a missing prerequisite skips loudly; with `CI=true` it fails.
//!
//! This file has the shared set-up, the Prometheus and schemathesis cases; [`tls`], [`many_cgroups`] and [`top`] the
//! others.

mod many_cgroups;
mod tls;
mod top;

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mmuscope_tests::cgroup::CgroupPath;
use mmuscope_tests::eco::{prometheus, prometheus::Prometheus, tools};
use mmuscope_tests::harness::{Agent, CgroupGuard, HostEnv, prereq, run_workload};
use mmuscope_tests::truth::GroundTruth;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CGROUP_PARENT: &str = "/mmuscope-test";
const INVALIDATIONS: &str = "mmuscope_invalidations_total";

fn require(tools_needed: &[(&str, &str)]) -> Option<HostEnv> {
    let env = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload"))?;
    match tools::require(tools_needed) {
        Ok(_) => Some(env),
        Err(e) if prereq::in_ci() => panic!("{e:#}"),
        Err(e) => {
            eprintln!("\nSKIPPED: {e:#}\n");
            None
        }
    }
}

/// The workload in a fresh cgroup `<parent>/<name>`; the guard removes it when dropped.
fn workload(env: &HostEnv, name: &str, iterations: u64) -> Result<(CgroupGuard, GroundTruth)> {
    let rel = CgroupPath::parse(CGROUP_PARENT)?.join(name)?;
    let guard = CgroupGuard::new(env.hierarchies.clone(), rel);
    let n = iterations.to_string();
    let args = ["kvm-madvise", "--iterations", &n, "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", name];
    let truth = run_workload(&env.workload_bin, args)?;
    Ok((guard, truth))
}

#[test]
fn prometheus_scrape_equals_ground_truth_and_promtool_is_clean() {
    let Some(env) = require(&[("prometheus", "MMUSCOPE_PROMETHEUS"), ("promtool", "MMUSCOPE_PROMTOOL")]) else {
        return;
    };
    // --bpf.run-stats: the program families are among the queries below.
    let agent =
        Agent::start_with(&env.agent_bin, &["--bpf.run-stats"], READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let result = prometheus_case(&env, &agent);
    agent.finish(result);
}

fn prometheus_case(env: &HostEnv, agent: &Agent) -> Result<()> {
    let prom = Prometheus::start(agent.addr())?;
    let up = prom.wait_for("up{job=\"mmuscope\"}", Duration::from_secs(20), |v| v == 1.0)?;
    ensure!(up == Some(1.0), "Prometheus never scraped the agent successfully (up = {up:?})");
    // Prometheus keeps scraping every second while the workload runs.
    let (_guard, truth) = workload(env, &format!("eco-prom-{}", std::process::id()), 5_000)?;
    let label = truth.cgroups.attributed().path.to_string();
    let expected = truth.expected_tracepoint_total() as f64;
    let exact = |v: f64| v == expected;
    let queries = [
        format!("sum(mmuscope_invalidations_total{{cgroup=\"{label}\"}})"),
        format!("sum(mmuscope_invalidations_total{{cgroup=\"{label}\",event=\"unknown\",namespace=\"\"}})"),
        format!("sum by (cgroup) (mmuscope_invalidations_total{{cgroup=\"{label}\"}})"),
    ];
    println!(
        "ground truth for cgroup {label}: {expected} kvm_unmap_hva_range events ({} brackets × {} VM)",
        truth.invalidations.brackets_total(),
        truth.vms
    );
    println!("{:<100} {:>12} {:>12}", "PromQL instant query", "Prometheus", "ground truth");
    let mut failures = Vec::new();
    for q in &queries {
        let got = prom.wait_for(q, Duration::from_secs(20), exact)?;
        println!("{q:<100} {:>12} {expected:>12}", got.map_or("no data".to_string(), |v| v.to_string()));
        if got != Some(expected) {
            failures.push(format!("{q} = {got:?}, ground truth {expected}"));
        }
    }
    ensure!(failures.is_empty(), "Prometheus disagrees with the ground truth: {}", failures.join("; "));
    // At least 1, not exact: both count every cgroup and every program run on this host, those of other KVM users
    // (other VMs, other tests) included, which this test cannot know; the workload's own figures are exact above.
    for q in ["mmuscope_cgroups_tracked", "sum(mmuscope_bpf_program_runs_total{program=\"kvm_unmap_tp_btf\"})"] {
        let v = prom.query(q)?.first().map(|(_, v)| *v);
        println!("{q} = {v:?}");
        ensure!(v.is_some_and(|v| v >= 1.0), "{q} has no data or is 0");
    }

    // The JSON API reports the same figure for the cgroup id.
    let id = truth.cgroups.attributed().id;
    let (code, body) = agent.scraper().get(&format!("/api/v1/cgroups/{id}"))?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    println!("GET /api/v1/cgroups/{id}: HTTP {code}, invalidations {}", v["invalidations"]);
    ensure!(code == 200 && v["invalidations"].as_f64() == Some(expected), "API: HTTP {code}: {body}");

    let (_, text) = agent.scraper().get("/metrics")?;
    let report = prometheus::promtool_check_metrics(&text)?;
    println!(
        "promtool check metrics: clean ({} bytes of exposition){}",
        text.len(),
        if report.trim().is_empty() { String::new() } else { format!(": {report}") }
    );
    Ok(())
}

#[test]
fn schemathesis_finds_no_server_errors_and_responses_conform() {
    let Some(env) = require(&[]) else { return };
    let Some(st) = tools::schemathesis() else {
        let e = "schemathesis not found (target/eco/venv, PATH or $MMUSCOPE_SCHEMATHESIS); `cargo xtask test --tier eco` installs it";
        if prereq::in_ci() {
            panic!("{e}");
        }
        eprintln!("\nSKIPPED: {e}\n");
        return;
    };
    let agent = Agent::start_with(&env.agent_bin, &[], READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<()> {
        // Some activity, so /api/v1/cgroups has entries to return.
        let (_guard, _truth) = workload(&env, &format!("eco-api-{}", std::process::id()), 200)?;
        let schema = format!("{}/api/v1/openapi.json", agent.base_url());
        // schemathesis keeps a cache in `./.schemathesis`: run it in a scratch directory, not the source tree.
        let cwd = tools::scratch_dir("schemathesis")?;
        let out = Command::new(&st)
            .current_dir(&cwd)
            .args(["run", &schema, "--checks", "all", "--max-examples", "50", "--workers", "2", "--seed", "1"])
            .args(["--request-timeout", "10", "--no-color", "--generation-database", "none"])
            // A valid stack request holds its connection for the whole capture (1 to 60 s) and only one runs at a
            // time: beyond the timeout and the two workers. Its formats and 4xx are checked by the `stacks` test.
            .args(["--exclude-path", "/api/v1/stacks"])
            .env("SCHEMATHESIS_HOOKS", "")
            .output()
            .context("running schemathesis")?;
        let text = String::from_utf8_lossy(&out.stdout);
        println!("{text}{}", String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_dir_all(&cwd);
        ensure!(out.status.success(), "schemathesis reported failures ({})", out.status);
        Ok(())
    })();
    agent.finish(result);
}
