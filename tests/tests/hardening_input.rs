//! Hardening, bad input: config files, flags and web config files that are wrong in every way we could think of
//! make the agent exit with status 2 before it attaches anything, with a message naming the file, line and key
//! (or the flag); abusive HTTP requests (random paths and query strings, other methods, bodies of 1 MiB and more,
//! oversized and malformed heads) get a 4xx — a JSON `{"error": …}` from every handler of ours — and the agent
//! keeps serving `/metrics`.
//!
//! Run: `cargo test -p mmuscope-tests --test hardening_input -- --test-threads=1 --nocapture` (root for the HTTP
//! test, which starts the agent; the `host` tier runs it).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mmuscope_tests::hardening::{rawhttp, run_command_to_exit};
use mmuscope_tests::harness::{Agent, HostEnv, bins};

const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mmuscope-hardening-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn agent_bin() -> Option<PathBuf> {
    let bin = bins::agent_bin();
    if bin.is_file() {
        return Some(bin);
    }
    let why = format!("agent binary {} not built", bin.display());
    if mmuscope_tests::harness::prereq::in_ci() {
        panic!("{why}");
    }
    eprintln!("\nSKIPPED: {why}\n");
    None
}

/// Runs `mmuscope run <args>` and requires exit status 2 and every `needle` in stderr; prints what it saw.
fn expect_exit_2(bin: &Path, case: &str, args: &[&str], needles: &[&str], failures: &mut Vec<String>) {
    expect_exit_2_cmd(Command::new(bin).arg("run").args(args), case, needles, failures);
}

fn expect_exit_2_cmd(cmd: &mut Command, case: &str, needles: &[&str], failures: &mut Vec<String>) {
    match run_command_to_exit(cmd, EXIT_TIMEOUT) {
        Ok((code, stderr)) => {
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or_default();
            println!("{case:<44} exit {code}  {first}");
            let missing: Vec<&&str> = needles.iter().filter(|n| !stderr.contains(**n)).collect();
            if code != 2 || !missing.is_empty() {
                failures.push(format!("{case}: exit {code}, missing {missing:?} in stderr:\n{stderr}"));
            }
        }
        Err(e) => failures.push(format!("{case}: {e:#}")),
    }
}

#[test]
fn bad_config_files_exit_2_naming_file_line_and_key() {
    let Some(bin) = agent_bin() else { return };
    let dir = Scratch::new("config");
    let mut failures = Vec::new();
    let cases: &[(&str, &str, &[&str])] = &[
        ("wrong type (string for a number)", "max-cgroups = \"many\"\n", &[":1:15", "max-cgroups", "many"]),
        ("wrong type (bool for a number)", "\n\nmax-cgroups = true\n", &[":3:15", "max-cgroups", "boolean"]),
        (
            "wrong type (table for a list)",
            "[web]\nlisten-address = { a = 1 }\n",
            &[":2:20", "`web.listen-address`", "table"],
        ),
        ("wrong type (datetime)", "[cgroups]\ndeleted-ttl = 1979-05-27T07:32:00Z\n", &[":2:15", "cgroups.deleted-ttl"]),
        ("invalid value (address)", "[web]\nlisten-address = [\"nowhere\"]\n", &[":2:18", "web.listen-address"]),
        ("out of range", "[map]\nstats-entries = 1\n", &[":2:17", "map.stats-entries"]),
        ("unknown key", "max-cgroups = 10\n[web]\nlisten = \"x\"\n", &[":3:1", "unknown key `web.listen`"]),
        ("unknown table", "[nonsense]\nkey = 1\n", &[":2:1", "nonsense.key"]),
        ("config.file inside the file", "[config]\nfile = \"/x\"\n", &[":2:1", "config.file", "cannot be set"]),
        ("TOML syntax error", "max-cgroups = [1,\n", &["line 1", "max-cgroups"]),
        ("duplicate key", "max-cgroups = 1\nmax-cgroups = 2\n", &["line 2", "duplicate key"]),
        // Valid UTF-8, so the TOML parser sees it: its error (the needles were read from the parser's message).
        ("control characters", "\u{0}\u{1}\u{2}", &["TOML parse error at line 1", "expected `=`"]),
    ];
    for (i, (case, text, needles)) in cases.iter().enumerate() {
        let path = dir.file(&format!("config-{i}.toml"), text);
        let p = path.to_str().unwrap();
        let mut needles = needles.to_vec();
        needles.push(p);
        expect_exit_2(&bin, case, &["--config.file", p], &needles, &mut failures);
    }
    // Not UTF-8 at all (a binary file): reading it fails before any parsing, naming the file.
    let binary = dir.file("binary.toml", [0xff, 0xfe, 0x00, 0x01, b'\n']);
    let b = binary.to_str().unwrap();
    let needles = [b, "reading config file", "stream did not contain valid UTF-8"];
    expect_exit_2(&bin, "not UTF-8 (binary)", &["--config.file", b], &needles, &mut failures);
    let missing = dir.0.join("absent.toml");
    let missing = missing.to_str().unwrap();
    expect_exit_2(&bin, "missing file", &["--config.file", missing], &[missing, "No such file"], &mut failures);
    let d = dir.0.to_str().unwrap();
    expect_exit_2(&bin, "a directory", &["--config.file", d], &[d, "directory"], &mut failures);
    // Unreadable: root reads anything, so run the agent as nobody for this case.
    let unreadable = dir.file("unreadable.toml", "max-cgroups = 10\n");
    std::fs::set_permissions(&unreadable, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let u = unreadable.to_str().unwrap();
    if unsafe { libc::geteuid() } == 0 {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]).arg(&bin);
        cmd.args(["run", "--config.file", u]);
        expect_exit_2_cmd(&mut cmd, "unreadable file (as nobody)", &[u, "Permission denied"], &mut failures);
    } else {
        expect_exit_2(&bin, "unreadable file", &["--config.file", u], &[u, "Permission denied"], &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let Some(bin) = agent_bin() else { return };
    let mut failures = Vec::new();
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("unknown flag", &["--no-such-flag"], &["--no-such-flag"]),
        ("number expected", &["--max-cgroups", "x"], &["--max-cgroups", "'x'"]),
        ("negative number", &["--max-cgroups=-1"], &["--max-cgroups"]),
        ("map size below range", &["--map.stats-entries", "1"], &["--map.stats-entries", "16"]),
        ("map size above range", &["--map.stats-entries", "99999999"], &["--map.stats-entries"]),
        ("bad address", &["--web.listen-address", "localhost"], &["--web.listen-address"]),
        ("reserved telemetry path", &["--web.telemetry-path", "/healthz"], &["--web.telemetry-path", "reserved"]),
        ("relative telemetry path", &["--web.telemetry-path", "metrics"], &["--web.telemetry-path"]),
        ("bad duration", &["--cgroups.deleted-ttl", "5 parsecs"], &["--cgroups.deleted-ttl"]),
        ("bad mode", &["--mode", "uprobe"], &["--mode", "uprobe"]),
        ("missing value", &["--btf"], &["--btf"]),
    ];
    for (case, args, needles) in cases {
        expect_exit_2(&bin, case, args, needles, &mut failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn bad_web_config_files_exit_2_naming_file_line_and_key() {
    let Some(bin) = agent_bin() else { return };
    let dir = Scratch::new("webconfig");
    let mut failures = Vec::new();
    let cases: &[(&str, &str, &[&str])] = &[
        ("unknown key", "tls_server_config:\n  cert_file: a\n  bogus: 1\n", &["tls_server_config.bogus", "line 3"]),
        ("unknown top-level key", "basic_auth: {}\n", &["basic_auth", "line 1"]),
        ("wrong type", "basic_auth_users: [alice]\n", &["basic_auth_users", "line 1"]),
        ("not a bcrypt hash", "basic_auth_users:\n  alice: plaintext\n", &["basic_auth_users", "alice"]),
        ("missing certificate", "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n", &["nope.crt"]),
        ("YAML syntax", "tls_server_config: [\n", &["line"]),
    ];
    for (i, (case, text, needles)) in cases.iter().enumerate() {
        let path = dir.file(&format!("web-{i}.yml"), text);
        let p = path.to_str().unwrap();
        let mut needles = needles.to_vec();
        needles.push(p);
        expect_exit_2(&bin, &format!("web config: {case}"), &["--web.config.file", p], &needles, &mut failures);
    }
    let missing = dir.0.join("absent.yml");
    let m = missing.to_str().unwrap();
    expect_exit_2(&bin, "web config: missing file", &["--web.config.file", m], &[m, "No such file"], &mut failures);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A tiny deterministic generator (xorshift), so a failing random path can be reproduced from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A URL path + query of random bytes, percent-encoded where HTTP requires it.
    fn target(&mut self) -> String {
        let prefixes = ["/", "/api/v1/", "/api/v1/cgroups/", "/api/v1/cgroups?", "/api/v1/slow?", "/metrics?", "/%"];
        let mut s = prefixes[(self.next() % prefixes.len() as u64) as usize].to_string();
        for _ in 0..(self.next() % 40) {
            let b = (self.next() % 256) as u8;
            if b.is_ascii_alphanumeric() || b"-._~/?&=".contains(&b) {
                s.push(b as char);
            } else {
                s.push_str(&format!("%{b:02X}"));
            }
        }
        s
    }
}

#[test]
fn abusive_http_requests_get_4xx_and_the_agent_keeps_serving() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let agent = Agent::start(&env.agent_bin, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let addr = agent.addr();
    let mut failures: Vec<String> = Vec::new();
    let host = "Host: 127.0.0.1";
    let seed = 0x6d6d_7573_636f_7065;
    let mut rng = Rng(seed);
    let mut random_statuses = std::collections::BTreeMap::<u16, u32>::new();
    for _ in 0..300 {
        let target = rng.target();
        match rawhttp::request(addr, &format!("GET {target} HTTP/1.1\r\n{host}"), b"") {
            Ok(r) => {
                *random_statuses.entry(r.status).or_default() += 1;
                // A random path may hit a real endpoint (e.g. `/api/v1/cgroups?` with an empty query); anything
                // else must be a JSON 4xx. Never a 5xx.
                if r.status >= 500 || (r.status >= 400 && r.json_error().is_none()) {
                    failures.push(format!("random target {target:?} (seed {seed:#x}): HTTP {}: {}", r.status, r.body));
                }
            }
            Err(e) => failures.push(format!("random target {target:?}: {e:#}")),
        }
    }
    println!("300 random targets (seed {seed:#x}): status counts {random_statuses:?}");
    let mut check = |case: &str, head: &str, body: &[u8], json: bool| {
        match rawhttp::request(addr, head, body) {
            Ok(r) => {
                let error = r.json_error();
                let shown = error.clone().unwrap_or_else(|| format!("(body {} bytes, not JSON)", r.body.len()));
                println!("{case:<46} HTTP {}  {}", r.status, shown.chars().take(90).collect::<String>());
                if !(400..500).contains(&r.status) {
                    failures.push(format!("{case}: HTTP {} (want 4xx): {}", r.status, r.body));
                }
                if json && error.is_none() {
                    failures.push(format!("{case}: no JSON error body: {:?} {:?}", r.content_type, r.body));
                }
            }
            Err(e) => failures.push(format!("{case}: {e:#}")),
        }
        match agent.scraper().get("/metrics") {
            Ok((200, _)) => {}
            other => failures.push(format!("{case}: /metrics afterwards: {other:?}")),
        }
    };
    check("unknown path", &format!("GET /no/such/thing HTTP/1.1\r\n{host}"), b"", true);
    check("bad query value", &format!("GET /api/v1/cgroups?limit=-5 HTTP/1.1\r\n{host}"), b"", true);
    check("unknown query parameter", &format!("GET /api/v1/cgroups?evil=1 HTTP/1.1\r\n{host}"), b"", true);
    check("huge query value", &format!("GET /api/v1/cgroups?limit={} HTTP/1.1\r\n{host}", "9".repeat(4000)), b"", true);
    check("bad cgroup id", &format!("GET /api/v1/cgroups/-1 HTTP/1.1\r\n{host}"), b"", true);
    check("path traversal", &format!("GET /../../etc/passwd HTTP/1.1\r\n{host}"), b"", true);
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECTSOME"] {
        check(&format!("method {m}"), &format!("{m} /metrics HTTP/1.1\r\n{host}"), b"", true);
    }
    let mib = vec![b'x'; 1024 * 1024 + 1];
    let len = format!("Content-Length: {}", mib.len());
    check("POST 1 MiB body", &format!("POST /api/v1/status HTTP/1.1\r\n{host}\r\n{len}"), &mib, true);
    check("GET with 1 MiB body", &format!("GET /metrics HTTP/1.1\r\n{host}\r\n{len}"), &mib, true);
    check(
        "GET announcing a 10 GiB body",
        &format!("GET /metrics HTTP/1.1\r\n{host}\r\nContent-Length: 10737418240"),
        b"",
        true,
    );
    check(
        "chunked GET",
        &format!("GET /metrics HTTP/1.1\r\n{host}\r\nTransfer-Encoding: chunked"),
        b"5\r\nhello\r\n0\r\n\r\n",
        true,
    );
    check(
        "odd headers",
        &format!(
            "GET /nope HTTP/1.1\r\n{host}\r\nAccept: */*;q=banana\r\nAuthorization: Basic !!!\r\nRange: bytes=9-1\r\nX-Forwarded-For: ::::"
        ),
        b"",
        true,
    );
    // Heads beyond the 16 KiB limit and malformed request lines are refused by the HTTP parser (hyper) itself,
    // before any handler: a bare 431/400 without a body, then the connection is closed.
    let big = "a".repeat(64 * 1024);
    check("64 KiB header", &format!("GET /metrics HTTP/1.1\r\n{host}\r\nX-Big: {big}"), b"", false);
    check(
        "1 MiB of headers",
        &format!("GET /metrics HTTP/1.1\r\n{host}{}", "\r\nX-H: 0123456789abcdef".repeat(50_000)),
        b"",
        false,
    );
    check("malformed request line", "GARBAGE", b"", false);
    check("control bytes in a header name", &format!("GET /nope HTTP/1.1\r\n{host}\r\nX-\u{7f}: \u{1}"), b"", false);
    check("HTTP/9.9", &format!("GET /metrics HTTP/9.9\r\n{host}"), b"", false);
    let tail = agent.output_tail();
    let stopped = agent.stop();
    assert!(failures.is_empty(), "{}\n--- agent output tail ---\n{tail}", failures.join("\n"));
    stopped.unwrap_or_else(|e| panic!("{e:#}"));
}
