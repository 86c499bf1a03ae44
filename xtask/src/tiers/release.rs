//! The agent's release build (`cargo build --release -p mmuscope`), which the `vm`, `ship` and `fleet` tiers run and
//! package. `cargo xtask test` starts it in the background, at a low CPU priority ([`NICE`]), just before the first
//! selected tier whose tests mostly wait (`Tier::idle_cpu`: agents starting, workloads, sleeps; they compile little),
//! so that it takes the CPU they leave idle; its output goes to a log file instead of mixing with theirs. Started
//! right after the debug build instead, it slowed `lint` and `unit` by 143 s in one CI (both compile, and `unit`'s
//! builds of the agent wait on the eBPF object's build directory, which the release build held at nice 10) and
//! saved 130 s in `vm`. The first tier that needs the binary waits for it; a later one gets the same answer. Without
//! a background start, the first tier that needs it builds it in the foreground.

use std::{
    fs::{self, File},
    path::PathBuf,
    process::Command,
    sync::Mutex,
    thread::{self, JoinHandle},
    time::Instant,
};

use anyhow::{Result, anyhow, bail};

use crate::{
    process, progress, toolchain,
    workspace::{Profile, Workspace},
};

/// The background build's nice value: below every foreground tier, above nothing.
const NICE: i32 = 10;

/// The release agent, built once per `cargo xtask test`.
pub struct ReleaseAgent {
    state: Mutex<State>,
}

enum State {
    NotStarted,
    Building { handle: JoinHandle<Result<()>>, log: PathBuf, started: Instant },
    Done(Result<PathBuf, String>),
}

impl ReleaseAgent {
    /// Nothing started: the first tier that asks builds it in the foreground.
    pub fn not_started() -> Self {
        Self { state: Mutex::new(State::NotStarted) }
    }

    /// Starts the build in a background thread at nice [`NICE`], its output in `target/xtask/release-build.log`,
    /// unless it was started or done already.
    pub fn start_in_background(&self, ws: &Workspace) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*state, State::NotStarted) {
            *state = Self::spawn(ws);
        }
    }

    fn spawn(ws: &Workspace) -> State {
        let log = ws.target_dir().join("xtask/release-build.log");
        let mut cmd = command(ws);
        let line = process::describe(&cmd);
        say(format!("`{line}` runs in the background at nice {NICE} (log: {})", ws.display(&log)));
        let handle = {
            let log = log.clone();
            thread::spawn(move || -> Result<()> {
                if let Some(dir) = log.parent() {
                    fs::create_dir_all(dir)?;
                }
                let file = File::create(&log)?;
                cmd.stdout(file.try_clone()?).stderr(file);
                // On Linux the nice value belongs to the thread, and the processes it starts inherit it.
                // SAFETY: a plain system call on the calling thread.
                if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, NICE) } != 0 {
                    say(format!(
                        "could not lower the background build's priority: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                let status = cmd.status().map_err(|e| anyhow!("could not start `{line}`: {e}"))?;
                if !status.success() {
                    bail!("`{line}` failed ({status})");
                }
                Ok(())
            })
        };
        State::Building { handle, log, started: Instant::now() }
    }

    /// The built binary: waits for the background build, or builds it now if none was started.
    pub fn path(&self, ws: &Workspace) -> Result<PathBuf> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let result = match std::mem::replace(&mut *state, State::NotStarted) {
            State::Done(result) => result,
            State::NotStarted => process::run(&mut command(ws))
                .map(|()| ws.binary(Profile::Release, "mmuscope"))
                .map_err(|e| format!("{e:#}")),
            State::Building { handle, log, started } => {
                if !handle.is_finished() {
                    say("waiting for the release build running in the background");
                }
                let outcome = handle.join().unwrap_or_else(|_| Err(anyhow!("the release build's thread panicked")));
                let seconds = progress::seconds(started.elapsed());
                match outcome {
                    Ok(()) => {
                        say(format!("release build done, {seconds} s after it started"));
                        Ok(ws.binary(Profile::Release, "mmuscope"))
                    }
                    Err(e) => {
                        let text = fs::read_to_string(&log).unwrap_or_default();
                        let tail: Vec<&str> = text.lines().rev().take(40).collect();
                        let tail: Vec<&str> = tail.into_iter().rev().collect();
                        Err(format!("{e:#}; the last lines of {}:\n{}", ws.display(&log), tail.join("\n")))
                    }
                }
            }
        };
        *state = State::Done(result.clone());
        result.map_err(|e| anyhow!(e))
    }
}

fn command(ws: &Workspace) -> Command {
    let mut cmd = toolchain::host_cargo(ws);
    cmd.args(["build", "--release", "-p", "mmuscope"]);
    cmd
}

fn say(message: impl std::fmt::Display) {
    progress::say("test", message);
}
