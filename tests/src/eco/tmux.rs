//! A program in a detached tmux session: type keys into it, read its screen.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::tools;

pub struct Tmux {
    bin: std::path::PathBuf,
    session: String,
}

impl Tmux {
    /// Starts `command` (a shell command line) in a new `width`×`height` session.
    pub fn start(name: &str, command: &str, width: u16, height: u16) -> Result<Self> {
        let bin = tools::require(&[("tmux", "MMUSCOPE_TMUX")])?.remove(0);
        let session = format!("{name}-{}", std::process::id());
        let t = Self { bin, session };
        t.run(&["new-session", "-d", "-s", &t.session, "-x", &width.to_string(), "-y", &height.to_string(), command])?;
        // Keep the pane after the program exits, so its last screen (or error) can still be read.
        t.run(&["set-option", "-t", &t.session, "remain-on-exit", "on"])?;
        Ok(t)
    }

    fn run(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin).args(args).output().context("running tmux")?;
        if !out.status.success() {
            bail!("tmux {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn send_keys(&self, keys: &str) -> Result<()> {
        self.run(&["send-keys", "-t", &self.session, keys]).map(|_| ())
    }

    /// The visible screen as text.
    pub fn capture(&self) -> Result<String> {
        self.run(&["capture-pane", "-p", "-t", &self.session])
    }

    /// Captures until `pred` holds or `timeout` passes; returns the last screen.
    pub fn wait_for_screen(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.capture()?;
            if pred(&screen) || Instant::now() >= deadline {
                return Ok(screen);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the program in the pane has exited.
    pub fn pane_dead(&self) -> Result<bool> {
        Ok(self.run(&["display-message", "-p", "-t", &self.session, "#{pane_dead}"])?.trim() == "1")
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin).args(["kill-session", "-t", &self.session]).output();
    }
}
