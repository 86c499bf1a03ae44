//! TLS and basic auth from `--web.config.file`, checked with curl and `mmuscope snapshot`, including a client-CA
//! change picked up without a restart.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use mmuscope_tests::eco::{certs::TestCerts, tools};
use mmuscope_tests::harness::{Agent, HostEnv};

use super::{READY_TIMEOUT, require, workload};

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
