//! Waiting for the agent under test where a scenario depends on its state (`--agent-url`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mmuscope_tests::harness::scrape::Scraper;

/// How long the agent may take to see what a scenario waits for: its next inventory sweep, which a request makes
/// at most once a second (a callback met for the first time is named from kallsyms first: seconds under TCG).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `/api/v1/subscribers` (each request may sweep, which attaches the fork-copy hook once this process's
/// pin is seen) until `fork_copy_hook.attached` is true. Only reads and sleeps in between: the pinned region and
/// the rest of this mm stay as they are.
pub fn await_fork_copy_hook(base_url: &str) -> Result<()> {
    let what = "attach its fork-copy hook after this process's pin";
    let waited = await_subscribers(base_url, what, |view| settled(&view["fork_copy_hook"]))?;
    eprintln!("mmuscope-workload: the agent's fork-copy hook is attached ({waited:.1} s after the pin)");
    Ok(())
}

/// The process that waits on the agent for [`await_subscription_hooks`] (`--await-hooks`): this binary's hidden
/// `await-hooks-helper`, started by `main` before the scenario registers anything, and its pipes.
struct HooksHelper {
    stdin: std::process::ChildStdin,
    stdout: std::process::ChildStdout,
    _child: std::process::Child,
}

static HOOKS_HELPER: std::sync::Mutex<Option<HooksHelper>> = std::sync::Mutex::new(None);

/// With `--await-hooks URL`, starts the helper. Call before anything is registered: spawning allocates and maps.
pub fn start_hooks_helper(url: Option<&str>) -> Result<()> {
    let Some(url) = url else { return Ok(()) };
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("this binary's path")?;
    let mut child = Command::new(exe)
        .args(["--await-hooks", url, "await-hooks-helper"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the --await-hooks helper")?;
    let stdin = child.stdin.take().context("the helper's stdin")?;
    let stdout = child.stdout.take().context("the helper's stdout")?;
    *HOOKS_HELPER.lock().unwrap_or_else(|e| e.into_inner()) = Some(HooksHelper { stdin, stdout, _child: child });
    Ok(())
}

/// With `--await-hooks URL`, called right after this process registered a notifier (a KVM VM, a test-module
/// subscriber): returns once the agent's `/api/v1/subscribers` says `subscription_hooks.attached`. In fentry mode
/// the agent attaches its operation-boundary, TLB-gather and cause-window hooks only while some mm has
/// subscriptions, and the registration asks it to attach them at once; the counted operations must not start before.
/// An HTTP request here would allocate, free and map in this mm (each one a bracket its subscriber sees), so the
/// helper process polls: this side writes one byte to its stdin and reads one byte back, with no allocation.
pub fn await_subscription_hooks() -> Result<()> {
    let mut guard = HOOKS_HELPER.lock().unwrap_or_else(|e| e.into_inner());
    let Some(helper) = guard.as_mut() else { return Ok(()) };
    use std::io::{Read, Write};
    let mut answer = [0u8; 1];
    let asked = helper.stdin.write_all(b"\n").and_then(|()| helper.stdout.read_exact(&mut answer));
    match (asked, answer[0]) {
        (Ok(()), b'1') => Ok(()),
        (Ok(()), _) => bail!("the agent did not attach its subscription hooks (the helper's message is above)"),
        (Err(e), _) => Err(e).context("talking to the --await-hooks helper"),
    }
}

/// Whether a group of the agent's on-demand hooks (`/api/v1/subscribers`' `fork_copy_hook`, `subscription_hooks`)
/// is attached, or will never be (no family with such a hook is attached in the agent's mode: nothing to wait for).
fn settled(group: &serde_json::Value) -> bool {
    group["attached"] == true || !group["none_attached"].is_null()
}

/// The helper's side: for each line on stdin, polls the agent at `url` until `subscription_hooks.attached` and
/// answers `1` (or `0` after printing why not).
pub fn hooks_helper(url: Option<&str>) -> Result<()> {
    use std::io::{BufRead, Write};
    let url = url.context("await-hooks-helper needs --await-hooks URL")?;
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        line.context("reading the workload's request")?;
        let what = "attach its subscription hooks after the workload registered a notifier";
        let answer = match await_subscribers(url, what, |view| settled(&view["subscription_hooks"])) {
            Ok(waited) => {
                eprintln!(
                    "mmuscope-workload: the agent's subscription hooks are attached ({waited:.3} s after registering)"
                );
                b"1"
            }
            Err(e) => {
                eprintln!("mmuscope-workload: error: {e:#}");
                b"0"
            }
        };
        out.write_all(answer).and_then(|()| out.flush()).context("answering the workload")?;
    }
    Ok(())
}

/// Polls `/api/v1/subscribers` (each request may sweep, and a sweep attaches the callback timer to callbacks it has
/// not met) until the interval notifier on the mm of `pid` lists its `invalidate` callback as timed. Only reads and
/// sleeps in between: nothing of that mm is invalidated while waiting.
pub fn await_interval_callback_timed(base_url: &str, pid: u32) -> Result<()> {
    let what = format!("time the interval callback of pid {pid} (is it running with --probes.late-callbacks?)");
    let waited = await_subscribers(base_url, &what, |view| interval_callback_timed(view, pid))?;
    eprintln!(
        "mmuscope-workload: the agent times the interval callback of pid {pid} ({waited:.1} s after registering)"
    );
    Ok(())
}

/// Polls `/api/v1/subscribers` every 200 ms until `done` holds for its view; the seconds it took, or an error
/// naming `what` the agent did not do within [`TIMEOUT`] and its last answer.
fn await_subscribers(base_url: &str, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> Result<f64> {
    let scraper = Scraper::new(base_url);
    let started = Instant::now();
    loop {
        // One slow answer is no verdict: a request may sweep the inventory and switch a group of hooks, which takes
        // seconds in a loaded TCG guest (seen: the ship tier's guest, a GET over the client's 10 s). Only the overall
        // timeout decides.
        let (status, body) = match scraper.get("/api/v1/subscribers") {
            Ok(answer) => answer,
            Err(e) if started.elapsed() <= TIMEOUT => {
                eprintln!("mmuscope-workload: {e:#}; asking again");
                continue;
            }
            Err(e) => return Err(e).context(format!("the agent at {base_url} did not {what}")),
        };
        if status == 200 {
            let view: serde_json::Value = serde_json::from_str(&body).context("parsing /api/v1/subscribers")?;
            if done(&view) {
                return Ok(started.elapsed().as_secs_f64());
            }
        }
        if started.elapsed() > TIMEOUT {
            bail!(
                "the agent at {base_url} did not {what} within {} s (last /api/v1/subscribers: HTTP {status}: {})",
                TIMEOUT.as_secs(),
                body.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether the mm of `pid` has an interval subscription whose `invalidate` callback is timed.
fn interval_callback_timed(view: &serde_json::Value, pid: u32) -> bool {
    let mms = view["mms"].as_array().into_iter().flatten();
    mms.filter(|m| m["pid"] == pid)
        .flat_map(|m| m["subscriptions"].as_array().into_iter().flatten())
        .filter(|s| s["interval"] == true)
        .flat_map(|s| s["callbacks"].as_array().into_iter().flatten())
        .any(|c| c["callback"] == "invalidate" && c["timed"] == true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_callback_is_timed_only_for_this_pid() {
        let view = serde_json::json!({"mms": [
            {"pid": 7, "subscriptions": [{"interval": true, "callbacks": [{"callback": "invalidate", "timed": true}]}]},
            {"pid": 8, "subscriptions": [
                {"interval": false, "callbacks": [{"callback": "invalidate_range_start", "timed": true}]},
                {"interval": true, "callbacks": [{"callback": "invalidate", "timed": false}]}
            ]}
        ]});
        assert!(interval_callback_timed(&view, 7));
        assert!(!interval_callback_timed(&view, 8), "a timed classic callback is not the interval one");
        assert!(!interval_callback_timed(&view, 9));
    }
}
