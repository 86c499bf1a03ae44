//! The processes a benchmark runs: a pinned foreground command whose stdout is JSON, and background processes (the
//! agent, a fixture, bpftrace) that are ready once they print a line or answer `/readyz`, and are stopped by
//! closing their stdin or SIGTERM. Every background process is stopped on drop, so an error never leaves one behind.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::http;

/// Runs `program args` pinned to `cpu` (taskset) and parses the JSON object it prints as its last stdout line.
pub fn run_json(cpu: usize, program: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().context("no output")?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

/// A timed loop's figures per round from a workload `bench-*` mode's JSON: wall clock, and the process's CPU time
/// (which leaves out other jobs holding the CPU).
pub struct PerOp {
    pub wall: f64,
    pub cpu: f64,
}

impl PerOp {
    pub fn of(v: &serde_json::Value) -> Result<Self> {
        Ok(Self {
            wall: v["ns_per_op"].as_f64().with_context(|| format!("no ns_per_op in {v}"))?,
            cpu: v["cpu_ns_per_op"].as_f64().with_context(|| format!("no cpu_ns_per_op in {v}"))?,
        })
    }
}

/// A background process.
pub struct Background {
    child: Child,
    what: String,
    /// The end of what it printed on stderr (drained continuously, so a chatty process never blocks on the pipe).
    stderr: Arc<Mutex<String>>,
    /// Ends by itself when its stdin closes (the fixtures, which then clean up); SIGTERM only if it does not.
    stops_at_eof: bool,
}

impl Background {
    /// Starts `cmd` (stdin and stdout piped) and waits up to `timeout` for a stdout line equal to `ready`.
    /// `stops_at_eof`: the process exits (after cleaning up) when its stdin closes.
    pub fn until_line(
        mut cmd: Command,
        what: &str,
        ready: &str,
        timeout: Duration,
        stops_at_eof: bool,
    ) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        let want = ready.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.trim() == want {
                    let _ = tx.send(());
                }
            }
        });
        let mut me = Self::adopt(child, what);
        me.stops_at_eof = stops_at_eof;
        match rx.recv_timeout(timeout) {
            Ok(()) => Ok(me),
            Err(_) => bail!("{what} did not print {ready:?} within {timeout:?}{}", me.stderr_hint()),
        }
    }

    fn adopt(mut child: Child, what: &str) -> Self {
        let stderr: Arc<Mutex<String>> = Arc::default();
        if let Some(err) = child.stderr.take() {
            let tail = stderr.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.push_str(&line);
                    t.push('\n');
                    if t.len() > 8192 {
                        let cut = t.len() - 4096;
                        let cut = (cut..t.len()).find(|i| t.is_char_boundary(*i)).unwrap_or(t.len());
                        t.drain(..cut);
                    }
                }
            });
        }
        Self { child, what: what.to_owned(), stderr, stops_at_eof: false }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr_hint(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        format!("; stderr: {}", self.stderr.lock().unwrap_or_else(|p| p.into_inner()).trim())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return; // already reaped (never signal a pid that may have been reused)
        }
        // Closing stdin ends the fixtures, which then remove what they made (10k cgroups take a few seconds);
        // SIGTERM ends the agent and bpftrace.
        drop(self.child.stdin.take());
        if self.stops_at_eof {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("bench: {} did not stop within 20 s of SIGTERM; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent (`mmuscope run --mode tracepoint` on a free loopback port, pinned to `cpu`).
pub struct Agent {
    pub process: Background,
    pub addr: SocketAddr,
    /// From spawn to the first `/readyz` 200.
    pub ready_after: Duration,
}

impl Agent {
    pub fn start(bin: &Path, cpu: usize, extra: &[&str]) -> Result<Self> {
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(cpu.to_string()).arg(bin);
        cmd.args(["run", "--web.listen-address", &addr.to_string(), "--mode", "tracepoint"]).args(extra);
        let start = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut process = Background::adopt(child, "the agent");
        let deadline = start + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = process.child.try_wait() {
                bail!("the agent exited ({status}) before it was ready{}", process.stderr_hint());
            }
            if http::get(addr, "/readyz").is_ok_and(|(code, _)| code == 200) {
                return Ok(Self { process, addr, ready_after: start.elapsed() });
            }
            if Instant::now() > deadline {
                bail!("the agent was not ready within 60 s{}", process.stderr_hint());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Resident set size of `pid` in bytes (`VmRSS`).
pub fn rss_bytes(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib * 1024.0)
}

/// User + system CPU time of `pid` so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 overall.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).context("utime")?
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).context("stime")?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// Peak resident set size of `pid` in bytes (`VmHWM`).
pub fn peak_rss_bytes(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib * 1024.0)
}
