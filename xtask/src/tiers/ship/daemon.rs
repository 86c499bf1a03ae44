//! Long-running processes of the tier (the agent, Prometheus): output to a log file, stopped with SIGTERM, killed
//! if still running when dropped; and the capability sets of every thread of a process.

use std::{
    fs,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

pub struct Daemon {
    name: String,
    child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, cmd: &mut Command, log: &Path) -> Result<Self> {
        let file = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        println!("$ {}", crate::process::describe(cmd));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        Ok(Self { name: name.to_string(), child, log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails (with the log's tail) if the process has exited.
    pub fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}; its log ({}):\n{}", self.name, self.log.display(), self.tail());
        }
        Ok(())
    }

    /// SIGTERM, then requires exit status 0 within 20 s.
    pub fn stop(self) -> Result<()> {
        let pid = self.child.id();
        self.stop_by_signalling(pid)
    }

    /// The process our child started (the command behind a wrapper such as strace), if there is one.
    pub fn grandchild(&self) -> Option<u32> {
        let pid = self.child.id();
        let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// SIGTERM to `pid` (our child or a process it started), then requires our child to exit with status 0
    /// within 20 s.
    pub fn stop_by_signalling(mut self, pid: u32) -> Result<()> {
        // SAFETY: kill(2) on our child (not reaped yet) or on a child of it that we just looked up.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} exited with {status} after SIGTERM; log:\n{}", self.name, self.tail());
                }
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within 20 s of SIGTERM", self.name);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A loopback address with a port the kernel just handed out (closed again before the daemon binds it).
pub fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Polls `check` every 100 ms until it returns `Ok(Some(_))` or `timeout` passes.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {} s", timeout.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// `(tid, CapInh, CapPrm, CapEff, CapAmb)` of every thread of `pid`.
pub fn thread_caps(pid: u32) -> Result<Vec<(u32, [u64; 4])>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else { continue };
        let status = fs::read_to_string(entry.path().join("status"))?;
        out.push((tid, parse_caps(&status).with_context(|| format!("no Cap* lines for thread {tid}"))?));
    }
    out.sort();
    Ok(out)
}

fn parse_caps(status: &str) -> Option<[u64; 4]> {
    let field = |name: &str| {
        let v = status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
        u64::from_str_radix(v.trim(), 16).ok()
    };
    Some([field("CapInh")?, field("CapPrm")?, field("CapEff")?, field("CapAmb")?])
}

/// Fails unless every thread of `pid` has empty inheritable, permitted, effective and ambient sets; returns the
/// number of threads.
pub fn require_no_capabilities(pid: u32) -> Result<usize> {
    let threads = thread_caps(pid)?;
    let held: Vec<String> = threads
        .iter()
        .filter(|(_, sets)| sets.iter().any(|s| *s != 0))
        .map(|(tid, [inh, prm, eff, amb])| {
            format!("thread {tid}: CapInh {inh:016x} CapPrm {prm:016x} CapEff {eff:016x} CapAmb {amb:016x}")
        })
        .collect();
    if !held.is_empty() {
        bail!("capabilities still held after attaching: {}", held.join("; "));
    }
    Ok(threads.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_sets() {
        let status = "CapInh:\t0000000000000000\nCapPrm:\t000000c000000004\nCapEff:\t000000c000000004\n\
                      CapBnd:\t000001ffffffffff\nCapAmb:\t000000c000000004\n";
        assert_eq!(parse_caps(status), Some([0, 0xc0_0000_0004, 0xc0_0000_0004, 0xc0_0000_0004]));
        assert_eq!(parse_caps("CapInh:\t0\n"), None);
    }
}
