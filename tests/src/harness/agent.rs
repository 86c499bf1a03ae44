//! The agent as a child process: start on a free loopback port, wait for `/readyz`, stop with SIGTERM.
//!
//! The agent's stdout and stderr are collected into a bounded tail so that every failure (never ready, early exit,
//! non-zero exit) can show what the agent said. If a test panics while the agent runs, dropping [`Agent`] kills it
//! and prints that tail.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
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

/// A running agent.
pub struct Agent {
    child: Child,
    addr: SocketAddr,
    tail: Tail,
    readers: Vec<JoinHandle<()>>,
}

impl Agent {
    /// Starts `bin run --web.listen-address 127.0.0.1:PORT --mode tracepoint` and waits until `/readyz` answers 200.
    pub fn start(bin: &Path, ready_timeout: Duration) -> Result<Self> {
        let mut agent = Self::spawn(bin, &[])?;
        agent.wait_ready(ready_timeout)?;
        Ok(agent)
    }

    /// [`Self::start`] behind `wrapper`, a command that ends by exec'ing its arguments (e.g. `unshare … sh -c '…;
    /// exec "$@"'`), so that the agent keeps the child's pid.
    pub fn start_wrapped(wrapper: &[&str], bin: &Path, extra: &[&str], ready_timeout: Duration) -> Result<Self> {
        let mut agent = Self::spawn_wrapped(wrapper, bin, extra)?;
        agent.wait_ready(ready_timeout)?;
        Ok(agent)
    }

    /// Spawns `bin run --web.listen-address 127.0.0.1:PORT --mode tracepoint <extra>` with its output collected.
    fn spawn(bin: &Path, extra: &[&str]) -> Result<Self> {
        Self::spawn_wrapped(&[], bin, extra)
    }

    fn spawn_wrapped(wrapper: &[&str], bin: &Path, extra: &[&str]) -> Result<Self> {
        let addr = free_loopback_port()?;
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["run", "--web.listen-address", &addr.to_string(), "--mode", "tracepoint"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning agent {}", bin.display()))?;
        let tail: Tail = Arc::default();
        let readers = vec![
            collect_lines(child.stdout.take(), "stdout", tail.clone()),
            collect_lines(child.stderr.take(), "stderr", tail.clone()),
        ];
        Ok(Self { child, addr, tail, readers })
    }

    /// Starts `bin run --web.listen-address 127.0.0.1:PORT --mode tracepoint <extra>` and waits until the port
    /// accepts connections (the agent listens only after attaching; works for TLS too, where `/readyz` over plain
    /// HTTP cannot be asked).
    pub fn start_with(bin: &Path, extra: &[&str], ready_timeout: Duration) -> Result<Self> {
        let mut agent = Self::spawn(bin, extra)?;
        let deadline = Instant::now() + ready_timeout;
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

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let scraper = self.scraper();
        let deadline = Instant::now() + timeout;
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

/// A port the kernel just handed out on 127.0.0.1. Closed again before the agent binds it; the window for another
/// process to take it is tiny on a test host.
fn free_loopback_port() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(listener.local_addr()?)
}

fn collect_lines(stream: Option<impl Read + Send + 'static>, name: &'static str, tail: Tail) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(stream) = stream else { return };
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(format!("[agent {name}] {line}"));
        }
    })
}
