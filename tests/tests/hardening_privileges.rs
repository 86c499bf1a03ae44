//! Hardening, privileges (root, to hand out capabilities with `setpriv`): the agent as user nobody with exactly
//! CAP_BPF, CAP_PERFMON and CAP_DAC_READ_SEARCH attaches, counts the workload exactly and then holds no capability
//! at all (every thread's CapEff/CapPrm/CapInh/CapAmb 0); without any one of them it refuses to start (exit 4)
//! naming the missing capability; there is no debug endpoint; basic auth from the web config is enforced, except on
//! /healthz and /readyz unless `--web.health-requires-auth`; `--web.disable-process-details` closes the endpoints
//! that show processes; exporter-toolkit keys the agent once refused (rate_limit, http2) are accepted.
//!
//! Run: `cargo test -p mmuscope-tests --test hardening_privileges -- --test-threads=1 --nocapture` (`host` tier).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mmuscope_tests::hardening::{WITH_TRACEFS, kvm_madvise, rawhttp, run_command_to_exit};
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::harness::{Agent, HostEnv, counter_by_cgroup};

const CGROUP_PARENT: &str = "/mmuscope-hardening";
const NEEDED: [&str; 3] = ["bpf", "perfmon", "dac_read_search"];

/// `setpriv` as nobody with exactly `caps` (inheritable + ambient, so they survive the exec), where tracefs is
/// mounted as under the systemd unit (its `RequiresMountsFor=`): CAP_DAC_READ_SEARCH is needed for tracefs.
fn as_nobody_with(bin: &std::path::Path, caps: &[&str]) -> Command {
    let wrapper = nobody_wrapper(caps);
    let mut cmd = Command::new(&wrapper[0]);
    cmd.args(&wrapper[1..]).arg(bin);
    cmd
}

/// The command (tracefs mounted, then `setpriv` to uid nobody with only `caps`) that exec's its arguments.
fn nobody_wrapper(caps: &[&str]) -> Vec<String> {
    let plus: Vec<String> = caps.iter().map(|c| format!("+{c}")).collect();
    let mut w: Vec<String> = WITH_TRACEFS.iter().map(|s| s.to_string()).collect();
    w.extend(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from));
    let inh = if plus.is_empty() { "-all".to_string() } else { format!("-all,{}", plus.join(",")) };
    w.push(format!("--inh-caps={inh}"));
    if !plus.is_empty() {
        w.push(format!("--ambient-caps={}", plus.join(",")));
    }
    w
}

#[test]
fn without_a_needed_capability_it_refuses_to_start_naming_it() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let mut failures = Vec::new();
    for (i, missing) in NEEDED.iter().enumerate() {
        let caps: Vec<&str> = NEEDED.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, c)| *c).collect();
        for sub in ["run", "check"] {
            let mut cmd = as_nobody_with(&env.agent_bin, &caps);
            cmd.args([sub, "--web.listen-address", "127.0.0.1:1"].iter().take(if sub == "run" { 3 } else { 1 }));
            let want = format!("CAP_{}", missing.to_ascii_uppercase());
            match run_command_to_exit(&mut cmd, Duration::from_secs(30)) {
                Ok((code, stderr)) => {
                    println!("{sub} as nobody with {caps:?}: exit {code}: {}", stderr.trim());
                    if code != 4 || !stderr.contains(&want) {
                        failures.push(format!("{sub} without {want}: exit {code}: {stderr}"));
                    }
                }
                Err(e) => failures.push(format!("{sub} without {want}: {e:#}")),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every thread's capability sets, from /proc.
fn thread_caps(pid: u32) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let status = std::fs::read_to_string(t?.path().join("status"))?;
        for l in
            status.lines().filter(|l| ["CapInh:", "CapPrm:", "CapEff:", "CapAmb:"].iter().any(|p| l.starts_with(p)))
        {
            let (k, v) = l.split_once(':').context("status line")?;
            out.push((k.to_string(), v.trim().to_string()));
        }
    }
    Ok(out)
}

#[test]
fn with_exactly_the_needed_capabilities_it_counts_exactly_and_drops_them_all() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    // The harness starts it on port 0 and learns the port from its log line; setpriv exec()s the agent, so the
    // child's pid is the agent's.
    let wrapper = nobody_wrapper(&NEEDED);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let agent = Agent::start_wrapped(&wrapper, &env.agent_bin, &[], Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let port = agent.addr();
    let result = (|| -> Result<()> {
        let scraper = agent.scraper();
        let (_, ready) = scraper.get("/readyz")?;
        println!("/readyz as nobody with {NEEDED:?}: {}", ready.trim());
        ensure!(ready.contains("\"required_families_not_attached\":[]"), "a required family is missing: {ready}");
        let caps = thread_caps(agent.pid())?;
        println!("agent pid {} (uid nobody) after attach, per thread: {caps:?}", agent.pid());
        ensure!(caps.iter().all(|(_, v)| v == "0000000000000000"), "capabilities left: {caps:?}");
        let (_guard, truth) = kvm_madvise(&env, CGROUP_PARENT, &format!("caps-{}", std::process::id()), 500)?;
        let label = truth.cgroups.attributed().path.to_string();
        let expected = truth.expected_tracepoint_total() as f64;
        let deadline = Instant::now() + Duration::from_secs(10);
        let got = loop {
            let got = counter_by_cgroup(&scraper.metrics()?, INVALIDATIONS).get(&label).copied().unwrap_or(0.0);
            if got == expected || Instant::now() >= deadline {
                break got;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        println!("kvm-madvise in {label}: ground truth {expected}, agent without capabilities {got}");
        ensure!(got == expected, "{got} != {expected}");
        // No debug or profiling endpoints exist.
        for path in ["/debug/pprof/", "/debug/pprof/heap", "/debug/vars", "/debug", "/pprof", "/admin", "/api/v1/debug"]
        {
            let r = rawhttp::request(port, &format!("GET {path} HTTP/1.1\r\nHost: x"), b"")?;
            println!("GET {path}: HTTP {} {}", r.status, r.body.trim());
            ensure!(r.status == 404 && r.json_error().is_some(), "{path}: HTTP {}", r.status);
        }
        Ok(())
    })();
    // A clean exit (status 0) after SIGTERM, or the failure with the agent's output tail.
    agent.finish(result);
}

#[test]
fn basic_auth_from_the_web_config_is_enforced() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let dir = std::env::temp_dir().join(format!("mmuscope-hardening-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.join("web.yml");
    // rate_limit and http2 are exporter-toolkit keys that used to stop the agent (exit 2).
    let text = format!(
        "basic_auth_users:\n  alice: {hash}\nrate_limit:\n  interval: 1ms\n  burst: 1000\nhttp_server_config:\n  http2: true\n"
    );
    std::fs::write(&web, text).unwrap();
    let agent = mmuscope_tests::harness::Agent::start_with(
        &env.agent_bin,
        &["--web.config.file", web.to_str().unwrap(), "--web.disable-process-details"],
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    let mut failures = Vec::new();
    for (case, auth, want) in [
        ("no credentials", None, 401),
        ("wrong password", Some(b64("alice:wrong")), 401),
        ("unknown user", Some(b64("bob:s3cret")), 401),
        ("garbage header", Some("%%%".to_string()), 401),
        ("right credentials", Some(b64("alice:s3cret")), 200),
    ] {
        for path in ["/metrics", "/api/v1/status"] {
            let head = match &auth {
                Some(a) => format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {a}"),
                None => format!("GET {path} HTTP/1.1\r\nHost: x"),
            };
            match rawhttp::request(agent.addr(), &head, b"") {
                Ok(r) => {
                    println!("{case:<18} GET {path:<15} HTTP {}", r.status);
                    if r.status != want {
                        failures.push(format!("{case} {path}: HTTP {} (want {want})", r.status));
                    }
                }
                Err(e) => failures.push(format!("{case} {path}: {e:#}")),
            }
        }
    }
    // The probes answer without credentials (kubelet), and the process-detail endpoints are closed even with them.
    for (case, path, auth, want) in [
        ("health, no credentials", "/healthz", None, 200),
        ("readiness, no credentials", "/readyz", None, 200),
        ("subscribers, disabled", "/api/v1/subscribers", Some(b64("alice:s3cret")), 403),
        ("slow brackets, disabled", "/api/v1/slow", Some(b64("alice:s3cret")), 403),
    ] {
        check_status(agent.addr(), case, path, auth.as_deref(), want, &mut failures);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let stopped = agent.stop();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    stopped.unwrap_or_else(|e| panic!("{e:#}"));
}

#[test]
fn health_endpoints_can_require_credentials_too() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let dir = std::env::temp_dir().join(format!("mmuscope-hardening-health-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hash = bcrypt::hash("s3cret", 4).unwrap();
    let web = dir.join("web.yml");
    std::fs::write(&web, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
    let agent = mmuscope_tests::harness::Agent::start_with(
        &env.agent_bin,
        &["--web.config.file", web.to_str().unwrap(), "--web.health-requires-auth"],
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "alice:s3cret");
    let mut failures = Vec::new();
    for path in ["/healthz", "/readyz"] {
        check_status(agent.addr(), "no credentials", path, None, 401, &mut failures);
        check_status(agent.addr(), "right credentials", path, Some(&b64), 200, &mut failures);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let stopped = agent.stop();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    stopped.unwrap_or_else(|e| panic!("{e:#}"));
}

/// One GET with optional basic-auth (already base64), its status compared with `want`.
fn check_status(
    addr: std::net::SocketAddr,
    case: &str,
    path: &str,
    auth: Option<&str>,
    want: u16,
    failures: &mut Vec<String>,
) {
    let head = match auth {
        Some(a) => format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {a}"),
        None => format!("GET {path} HTTP/1.1\r\nHost: x"),
    };
    match rawhttp::request(addr, &head, b"") {
        Ok(r) => {
            println!("{case:<26} GET {path:<20} HTTP {}", r.status);
            if r.status != want {
                failures.push(format!("{case} {path}: HTTP {} (want {want}): {}", r.status, r.body));
            }
        }
        Err(e) => failures.push(format!("{case} {path}: {e:#}")),
    }
}
