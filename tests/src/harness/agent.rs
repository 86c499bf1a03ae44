//! The agent as a child process: start on loopback port 0, learn the port the kernel gave it from the agent's own
//! `listening on http://…` log line, wait for `/readyz`, stop with SIGTERM. Nothing picks a port in advance, so no
//! other process can take it between the pick and the bind.
//!
//! The agent's stdout and stderr are collected into a bounded tail so that every failure (never ready, early exit,
//! non-zero exit) can show what the agent said. If a test panics while the agent runs, dropping [`Agent`] kills it
//! and prints that tail.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::scrape::Scraper;

/// Lines of agent output kept for error messages.
const TAIL_LINES: usize = 80;
/// How long the agent may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

type Tail = Arc<Mutex<VecDeque<String>>>;
/// The address the agent said it listens on, once it said so.
type Listening = Arc<Mutex<Option<SocketAddr>>>;
/// What the agent logs (logfmt or JSON) when its listener is bound, before the address.
const LISTENING: &str = "listening on ";

/// A running agent.
pub struct Agent {
    child: Child,
    addr: SocketAddr,
    tail: Tail,
    readers: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Starts `bin run --web.listen-address 127.0.0.1:0 --mode tracepoint` and waits until `/readyz` answers 200.
    pub fn start(bin: &Path, ready_timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + ready_timeout;
        let mut agent = Self::spawn(bin, &[], deadline)?;
        agent.wait_ready(deadline, ready_timeout)?;
        Ok(agent)
    }

    /// [`Self::start`] behind `wrapper`, a command that ends by exec'ing its arguments (e.g. `unshare … sh -c '…;
    /// exec "$@"'`), so that the agent keeps the child's pid.
    pub fn start_wrapped(wrapper: &[&str], bin: &Path, extra: &[&str], ready_timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + ready_timeout;
        let mut agent = Self::spawn_wrapped(wrapper, bin, extra, deadline)?;
        agent.wait_ready(deadline, ready_timeout)?;
        Ok(agent)
    }

    /// Spawns `bin run --web.listen-address 127.0.0.1:0 --mode tracepoint <extra>` with its output collected, and
    /// waits (until `deadline`) for the address it then listens on.
    fn spawn(bin: &Path, extra: &[&str], deadline: Instant) -> Result<Self> {
        Self::spawn_wrapped(&[], bin, extra, deadline)
    }

    fn spawn_wrapped(wrapper: &[&str], bin: &Path, extra: &[&str], deadline: Instant) -> Result<Self> {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["run", "--web.listen-address", "127.0.0.1:0", "--mode", "tracepoint"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning agent {}", bin.display()))?;
        let tail: Tail = Arc::default();
        let listening: Listening = Arc::default();
        let readers = vec![
            collect_lines(child.stdout.take(), "stdout", tail.clone(), listening.clone()),
            collect_lines(child.stderr.take(), "stderr", tail.clone(), listening.clone()),
        ];
        // The agent binds only after attaching its probes; until then there is no address to learn.
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut agent = Self { child, addr: unbound, tail, readers };
        loop {
            if let Some(addr) = *listening.lock().unwrap_or_else(|p| p.into_inner()) {
                agent.addr = addr;
                return Ok(agent);
            }
            if let Some(status) = agent.child.try_wait()? {
                agent.join_readers();
                bail!("agent exited with {status} before listening; output tail:\n{}", agent.output_tail());
            }
            if Instant::now() >= deadline {
                bail!("agent logged no \"{LISTENING}…\" address in time; output tail:\n{}", agent.output_tail());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `bin run --web.listen-address 127.0.0.1:0 --mode tracepoint <extra>` and waits until its port
    /// accepts connections (the agent listens only after attaching; works for TLS too, where `/readyz` over plain
    /// HTTP cannot be asked).
    pub fn start_with(bin: &Path, extra: &[&str], ready_timeout: Duration) -> Result<Self> {
        let deadline = Instant::now() + ready_timeout;
        let mut agent = Self::spawn(bin, extra, deadline)?;
        loop {
            if let Some(status) = agent.child.try_wait()? {
                agent.join_readers();
                bail!("agent exited with {status} before listening; output tail:\n{}", agent.output_tail());
            }
            if std::net::TcpStream::connect_timeout(&agent.addr, Duration::from_millis(200)).is_ok() {
                return Ok(agent);
            }
            if Instant::now() >= deadline {
                bail!("agent not listening within {ready_timeout:?}; output tail:\n{}", agent.output_tail());
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn scraper(&self) -> Scraper {
        Scraper::new(&self.base_url())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines the agent printed (stdout and stderr interleaved, prefixed with the stream).
    pub fn output_tail(&self) -> String {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }

    /// Ends a test that ran against this agent: stops it, then panics with `result`'s error and the agent's output
    /// tail, or with the error of a stop that was not clean.
    pub fn finish(self, result: Result<()>) {
        let tail = self.output_tail();
        let stopped = self.stop();
        if let Err(e) = result {
            panic!("{e:#}\n--- agent output tail ---\n{tail}");
        }
        stopped.unwrap_or_else(|e| panic!("{e:#}"));
    }

    /// Sends SIGTERM and requires a clean exit (status 0) within [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Result<()> {
        self.signal(libc::SIGTERM)?;
        let status = self.wait_for_exit(STOP_TIMEOUT)?;
        self.join_readers();
        match status {
            Some(s) if s.success() => Ok(()),
            Some(s) => bail!("agent exited with {s} after SIGTERM; output tail:\n{}", self.output_tail()),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "agent did not exit within {STOP_TIMEOUT:?} of SIGTERM (killed); output tail:\n{}",
                    self.output_tail()
                )
            }
        }
    }

    fn wait_ready(&mut self, deadline: Instant, timeout: Duration) -> Result<()> {
        let scraper = self.scraper();
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.join_readers();
                bail!("agent exited with {status} before becoming ready; output tail:\n{}", self.output_tail());
            }
            let last = match scraper.get("/readyz") {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("HTTP {code}: {}", body.trim()),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() >= deadline {
                bail!(
                    "agent not ready within {timeout:?} (last /readyz: {last}); output tail:\n{}",
                    self.output_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = libc::pid_t::try_from(self.child.id()).context("agent pid out of range")?;
        // SAFETY: kill(2) on our own child's pid; the child is not reaped yet, so the pid cannot have been reused.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("signalling the agent");
        }
        Ok(())
    }

    /// `Some(status)` once exited, `None` on timeout.
    fn wait_for_exit(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the output readers to see EOF, so the tail is complete.
    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.join_readers();
            if thread::panicking() {
                eprintln!("--- agent output tail (agent killed) ---\n{}\n---", self.output_tail());
            }
        }
    }
}

/// The address of an agent log line `… listening on http://127.0.0.1:40123 …` (logfmt or JSON; https too).
fn listening_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
    let rest = rest.strip_prefix("http://").or_else(|| rest.strip_prefix("https://"))?;
    rest.split(|c: char| c == '"' || c == '\\' || c.is_whitespace()).next()?.parse().ok()
}

fn collect_lines(
    stream: Option<impl Read + Send + 'static>,
    name: &'static str,
    tail: Tail,
    listening: Listening,
) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(stream) = stream else { return };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if let Some(addr) = listening_address(&line) {
                listening.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(addr);
            }
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(format!("[agent {name}] {line}"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::listening_address;

    #[test]
    fn the_listening_line_gives_the_address_in_both_log_formats() {
        let logfmt = "ts=2026-12-05T16:00:00Z level=info target=mmuscope::web::serve \
                      message=\"listening on http://127.0.0.1:40123\"";
        assert_eq!(listening_address(logfmt), Some("127.0.0.1:40123".parse().unwrap()));
        let json = r#"{"timestamp":"…","level":"INFO","fields":{"message":"listening on https://127.0.0.1:8443"}}"#;
        assert_eq!(listening_address(json), Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(listening_address("level=info message=\"attached brackets\""), None);
    }
}
