//! The agent in the guest: `mmuscope run --mode M` with its output in a log file (quoted on failure), ready when
//! `/readyz` answers 200, stopped with SIGTERM.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mmuscope_tests::harness::Scraper;

const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const TAIL_LINES: usize = 30;
/// How long an unchanged non-200 `/readyz` answer counts as final.
const SETTLED_503: Duration = Duration::from_secs(20);

pub struct Agent {
    child: Child,
    log: PathBuf,
    pub scraper: Scraper,
}

/// How the start ended for an agent that is running and serving HTTP.
pub enum Readiness {
    Ready,
    /// `/readyz` kept answering non-200 (why); the agent still serves `/metrics`, so the scenarios run anyway and
    /// show what it counts (a failed run then reports everything it can).
    NotReady(String),
}

impl Agent {
    /// The agent's BPF programs' `recursion_misses` (their fdinfo, 5.12+) by program id: runs the kernel skipped
    /// because the same program was already running on that CPU. A diagnostic: a skipped bracket program loses
    /// that bracket.
    pub fn recursion_misses(&self) -> std::collections::BTreeMap<u64, u64> {
        let mut out = std::collections::BTreeMap::new();
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fdinfo", self.child.id())) else { return out };
        for fd in fds.flatten() {
            let Ok(text) = std::fs::read_to_string(fd.path()) else { continue };
            let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
            if let (Some(id), Some(misses)) = (field("prog_id:"), field("recursion_misses:")) {
                out.insert(id, misses);
            }
        }
        out
    }

    /// Starts the agent; an error if it exits or never serves HTTP.
    pub fn start(
        bin: &Path,
        extra: &[String],
        mode: &str,
        listen: &str,
        ready_timeout: Duration,
    ) -> Result<(Self, Readiness)> {
        let log = PathBuf::from(format!("/tmp/mmuscope-agent-{mode}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(bin)
            .args(["run", "--mode", mode, "--web.listen-address", listen])
            // Every bracket into the slow log, so `/api/v1/slow` can be compared with the truth.
            .arg("--slow.min-duration=0s")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("spawning {} run --mode {mode}", bin.display()))?;
        let mut agent = Self { child, log, scraper: Scraper::new(&format!("http://{listen}")) };
        let started = Instant::now();
        let readiness = agent.wait_ready(ready_timeout)?;
        if let Readiness::Ready = readiness {
            println!("agent ({mode} mode) ready after {:.1} s", started.elapsed().as_secs_f64());
        }
        Ok((agent, readiness))
    }

    /// Polls `/readyz` until 200. The agent attaches before it serves HTTP, so the same non-200 answer for
    /// [`SETTLED_503`] means it will not become ready (e.g. a required family cannot attach in this mode): say so then
    /// instead of waiting out the whole timeout. An error if the agent exits, or serves nothing within `timeout`.
    fn wait_ready(&mut self, timeout: Duration) -> Result<Readiness> {
        let deadline = Instant::now() + timeout;
        let mut unchanged: Option<(String, Instant)> = None;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("agent exited with {status} before becoming ready; log tail:\n{}", self.tail());
            }
            let last = match self.scraper.get("/readyz") {
                Ok((200, _)) => return Ok(Readiness::Ready),
                Ok((code, body)) => format!("HTTP {code}: {}", body.trim()),
                Err(e) => format!("{e:#}"),
            };
            let settled = match &unchanged {
                Some((answer, since)) if *answer == last => since.elapsed() >= SETTLED_503 && last.starts_with("HTTP"),
                _ => {
                    unchanged = Some((last.clone(), Instant::now()));
                    false
                }
            };
            let serving = last.starts_with("HTTP");
            if settled || (serving && Instant::now() >= deadline) {
                let waited =
                    if settled { format!("{SETTLED_503:?} of the same answer") } else { format!("{timeout:?}") };
                return Ok(Readiness::NotReady(format!(
                    "agent not ready after {waited} (last /readyz: {last}); log tail:\n{}",
                    self.tail()
                )));
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("agent served no HTTP within {timeout:?} (last /readyz: {last}); log tail:\n{}", self.tail());
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM; the agent must exit 0 within [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("agent pid out of range")?;
        // SAFETY: kill(2) on our own unreaped child.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signalling the agent");
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                if status.success() {
                    return Ok(());
                }
                bail!("agent exited with {status} after SIGTERM; log tail:\n{}", self.tail());
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("agent did not exit within {STOP_TIMEOUT:?} of SIGTERM; log tail:\n{}", self.tail());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
