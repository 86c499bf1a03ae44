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

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mmuscope_tests::cgroup::{CgroupPath, Hierarchies};
use mmuscope_tests::eco::{certs::TestCerts, inject, prometheus, prometheus::Prometheus, tmux::Tmux, tools};
use mmuscope_tests::harness::{Agent, CgroupGuard, HostEnv, counter_by_cgroup, prereq, run_workload};
use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::GroundTruth;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CGROUP_PARENT: &str = "/mmuscope-test";
const INVALIDATIONS: &str = "mmuscope_invalidations_total";

/// The host prerequisites plus `tools`; `None` = skip (already reported), in CI a panic.
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

#[test]
fn tls_and_basic_auth_with_a_real_client() {
    let Some(env) = require(&[("curl", "MMUSCOPE_CURL"), ("openssl", "MMUSCOPE_OPENSSL")]) else { return };
    let dir = tools::scratch_dir("tls").unwrap();
    let certs = TestCerts::generate(&dir).unwrap_or_else(|e| panic!("{e:#}"));
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    let config = dir.join("web.yml");
    let base_config = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\nbasic_auth_users:\n  alice: {hash}\n"
    );
    std::fs::write(&config, &base_config).unwrap();
    let agent = Agent::start_with(&env.agent_bin, &["--web.config.file", config.to_str().unwrap()], READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let result = tls_case(&env, &agent, &certs, &config, &base_config);
    agent.finish(result);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `curl` → (exit code, HTTP status (0 when none), body).
fn curl(args: &[&str]) -> Result<(i32, u16, String)> {
    let bin = tools::require(&[("curl", "MMUSCOPE_CURL")])?.remove(0);
    let out =
        Command::new(bin).args(["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"]).args(args).output()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    Ok((out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body.to_string()))
}

fn tls_case(env: &HostEnv, agent: &Agent, certs: &TestCerts, config: &Path, base_config: &str) -> Result<()> {
    let https = format!("https://{}", agent.addr());
    let ca = certs.ca.to_str().unwrap();
    let metrics = format!("{https}/metrics");
    let check = |what: &str, args: &[&str], want_code: u16, want_exit: i32, body_has: &str| -> Result<()> {
        let (exit, code, body) = curl(args)?;
        println!("{what:<58} curl exit {exit:>2}, HTTP {code:>3}");
        ensure!(
            exit == want_exit && code == want_code && body.contains(body_has),
            "{what}: curl exit {exit} HTTP {code}, wanted exit {want_exit} HTTP {want_code} with {body_has:?}; body: {}",
            body.chars().take(300).collect::<String>()
        );
        Ok(())
    };
    check("right credentials → 200", &["--cacert", ca, "-u", "alice:s3cret", &metrics], 200, 0, "# TYPE mmuscope_")?;
    check("wrong password → 401", &["--cacert", ca, "-u", "alice:nope", &metrics], 401, 0, "\"error\"")?;
    check("unknown user → 401", &["--cacert", ca, "-u", "mallory:s3cret", &metrics], 401, 0, "\"error\"")?;
    check("no credentials → 401", &["--cacert", ca, &format!("{https}/api/v1/status")], 401, 0, "unauthorized")?;
    // The kubelet's probes send no credentials: /healthz and /readyz answer without them (over TLS still).
    check("/healthz without credentials → 200", &["--cacert", ca, &format!("{https}/healthz")], 200, 0, "ok")?;
    check("/readyz without credentials → 200", &["--cacert", ca, &format!("{https}/readyz")], 200, 0, "ready")?;
    check(
        "API with credentials → 200",
        &["--cacert", ca, "-u", "alice:s3cret", &format!("{https}/api/v1/status")],
        200,
        0,
        "kernel_release",
    )?;
    // Plain HTTP to the TLS port: refused with a 400 that says why, never served.
    check(
        "plain HTTP to the TLS port → 400",
        &["-u", "alice:s3cret", &format!("http://{}/metrics", agent.addr())],
        400,
        0,
        "HTTPS server",
    )?;
    // Without our CA the client refuses the server (curl exit 60: certificate problem).
    check("TLS without trusting the test CA → refused", &["-u", "alice:s3cret", &metrics], 0, 60, "")?;

    // `mmuscope snapshot` as a client over TLS with basic auth: the workload's cgroup with its exact count.
    let (_guard, truth) = workload(env, &format!("eco-tls-{}", std::process::id()), 300)?;
    let label = truth.cgroups.attributed().path.to_string();
    let expected = truth.expected_tracepoint_total();
    let out = Command::new(&env.agent_bin)
        .args(["snapshot", "--json", "--url", &https, "--tls.ca-file", ca, "--auth.username", "alice"])
        .args(["--limit", "10000"])
        .env("MMUSCOPE_PASSWORD", "s3cret")
        .output()?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let row = v["cgroups"]["cgroups"].as_array().into_iter().flatten().find(|c| c["cgroup"] == label.as_str());
    let observed = row.and_then(|c| c["invalidations"].as_u64());
    println!(
        "{:<58} exit {}, {label}: {observed:?} invalidations (ground truth {expected})",
        "mmuscope snapshot --json over TLS + basic auth", out.status
    );
    ensure!(out.status.success(), "snapshot failed: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(v["status"]["version"].is_string(), "snapshot has no status.version: {}", v["status"]);
    ensure!(observed == Some(expected), "snapshot: {label} has {observed:?} invalidations, ground truth {expected}");

    // Require client certificates: the next connections see the new file, no restart.
    let with_client_ca = base_config.replace(
        "  key_file: server.key\n",
        "  key_file: server.key\n  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    );
    std::fs::write(config, &with_client_ca)?;
    let (exit, code, _) = curl(&["--cacert", ca, "-u", "alice:s3cret", &metrics])?;
    println!("{:<58} curl exit {exit:>2}, HTTP {code:>3}", "after adding client_ca_file: no client cert → refused");
    ensure!(
        exit != 0 && code == 0,
        "a client without certificate was served after RequireAndVerifyClientCert (exit {exit}, HTTP {code})"
    );
    let cert = certs.client_cert.to_str().unwrap();
    let key = certs.client_key.to_str().unwrap();
    check(
        "with client certificate and credentials → 200",
        &["--cacert", ca, "--cert", cert, "--key", key, "-u", "alice:s3cret", &metrics],
        200,
        0,
        "# TYPE",
    )?;
    check(
        "with client certificate, wrong password → 401",
        &["--cacert", ca, "--cert", cert, "--key", key, "-u", "alice:x", &metrics],
        401,
        0,
        "error",
    )?;
    Ok(())
}

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

#[test]
fn top_in_tmux_shows_the_workload_cgroup() {
    let Some(env) = require(&[("tmux", "MMUSCOPE_TMUX")]) else { return };
    let agent = Agent::start_with(&env.agent_bin, &[], READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<()> {
        let (_guard, truth) = workload(&env, &format!("eco-top-{}", std::process::id()), 2_000)?;
        let label = truth.cgroups.attributed().path.to_string();
        let expected = truth.expected_tracepoint_total().to_string();
        let cmd = format!("{} top --url {} --interval 500ms", env.agent_bin.display(), agent.base_url());
        let t = Tmux::start("mmuscope-top", &cmd, 220, 40)?;
        let has_row = |s: &str| s.lines().any(|l| l.contains(&label) && l.split_whitespace().any(|w| w == expected));
        // The second poll has a rate (INV/S) for the row too. The workload ended before `top` started, so the
        // ground truth for the rate between two polls is exactly no new invalidation: `0.0`.
        let with_rate = |s: &str| {
            s.lines().any(|l| {
                l.contains(&label)
                    && l.split_whitespace().any(|w| w == expected)
                    && l.split_whitespace().next() == Some("0.0")
            })
        };
        let screen = t.wait_for_screen(Duration::from_secs(15), with_rate)?;
        println!("--- tmux capture-pane (sort: rate) ---\n{}\n---", screen.trim_end());
        ensure!(with_rate(&screen), "top does not show {label} with {expected} invalidations and a rate of 0.0");
        ensure!(screen.contains("sort: rate"), "header missing");
        t.send_keys("s")?;
        let screen = t.wait_for_screen(Duration::from_secs(5), |s| s.contains("sort: total"))?;
        println!("--- after `s` ---\n{}\n---", screen.lines().take(6).collect::<Vec<_>>().join("\n"));
        ensure!(screen.contains("sort: total") && has_row(&screen), "`s` did not switch to sort by total");
        t.send_keys("q")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.pane_dead()? {
            ensure!(Instant::now() < deadline, "top did not exit on `q`");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })();
    agent.finish(result);
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
