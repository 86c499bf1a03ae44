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
    let waited = await_subscribers(base_url, what, |view| view["fork_copy_hook"]["attached"] == true)?;
    eprintln!("mmuscope-workload: the agent's fork-copy hook is attached ({waited:.1} s after the pin)");
    Ok(())
}

/// The agent to wait for after registering a notifier (`--await-hooks`), set once by `main`.
static HOOKS_URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

pub fn set_hooks_url(url: Option<String>) {
    let _ = HOOKS_URL.set(url);
}

/// With `--await-hooks URL`, called right after this process registered a notifier (a KVM VM, a test-module
/// subscriber): polls `/api/v1/subscribers` until `subscription_hooks.attached` is true. In fentry mode the agent
/// attaches its operation-boundary, TLB-gather and cause-window hooks only while some mm has subscriptions, and the
/// registration asks it to attach them at once (within milliseconds); the counted operations must not start before.
/// Only reads and sleeps in between (small allocations, no mapping of this mm changes).
pub fn await_subscription_hooks() -> Result<()> {
    let Some(Some(url)) = HOOKS_URL.get() else { return Ok(()) };
    let what = "attach its subscription hooks after this process registered a notifier";
    let waited = await_subscribers(url, what, |view| view["subscription_hooks"]["attached"] == true)?;
    eprintln!("mmuscope-workload: the agent's subscription hooks are attached ({waited:.3} s after registering)");
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
        let (status, body) = scraper.get("/api/v1/subscribers")?;
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
