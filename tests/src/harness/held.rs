//! A workload started with `--hold`: it sets its scenario up (VMs registered, buffers pinned), says so on stderr and
//! waits until we close its stdin; then it tears down and prints its ground truth.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::truth::GroundTruth;

/// The workload's line when it holds (its `hold::HOLDING`).
const HOLDING: &str = "mmuscope-workload: holding; close stdin to continue";

pub struct HeldWorkload {
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Option<JoinHandle<String>>,
    shown: String,
}

impl HeldWorkload {
    /// Starts the workload (`args` must include `--hold`) and returns once it holds.
    pub fn spawn<I, S>(bin: &Path, args: I, timeout: Duration) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(bin);
        cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let shown = format!("{cmd:?}");
        let mut child = cmd.spawn().with_context(|| format!("starting {shown}"))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[workload] {line}");
                if line == HOLDING {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        let stdin = child.stdin.take();
        let mut held = Self { child, stdin, stderr: Some(reader), shown };
        if rx.recv_timeout(timeout).is_err() {
            let _ = held.child.kill();
            let stderr = held.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
            bail!("{} did not reach its hold point within {timeout:?}; stderr:\n{stderr}", held.shown);
        }
        Ok(held)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets it tear down and returns its ground truth.
    pub fn release(mut self) -> Result<GroundTruth> {
        drop(self.stdin.take());
        let mut stdout = String::new();
        self.child.stdout.take().context("stdout")?.read_to_string(&mut stdout).context("reading stdout")?;
        let status = self.child.wait().context("waiting for the workload")?;
        let stderr = self.stderr.take().and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            bail!("{} exited with {status}; stderr:\n{stderr}", self.shown);
        }
        GroundTruth::from_json(&stdout).with_context(|| format!("workload stdout was:\n{stdout}"))
    }
}

impl Drop for HeldWorkload {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            drop(self.stdin.take());
            let _ = self.child.wait();
        }
    }
}
