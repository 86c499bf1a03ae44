//! Waiting for the agent under test where a scenario depends on its state (`--agent-url`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mmuscope_tests::harness::scrape::Scraper;

/// How long the agent may take to notice a pin: it sweeps at most once a second on request.
const FORK_COPY_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `/api/v1/subscribers` (each request may sweep, which attaches the fork-copy hook once this process's
/// pin is seen) until `fork_copy_hook.attached` is true. Only reads and sleeps in between: the pinned region and
/// the rest of this mm stay as they are.
pub fn await_fork_copy_hook(base_url: &str) -> Result<()> {
    let scraper = Scraper::new(base_url);
    let started = Instant::now();
    loop {
        let (status, body) = scraper.get("/api/v1/subscribers")?;
        if status == 200 {
            let view: serde_json::Value = serde_json::from_str(&body).context("parsing /api/v1/subscribers")?;
            if view["fork_copy_hook"]["attached"] == serde_json::Value::Bool(true) {
                eprintln!(
                    "mmuscope-workload: the agent's fork-copy hook is attached ({:.1} s after the pin)",
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
        }
        if started.elapsed() > FORK_COPY_HOOK_TIMEOUT {
            bail!(
                "the agent at {base_url} did not attach its fork-copy hook within {} s of this process's pin \
                 (last /api/v1/subscribers: HTTP {status}: {})",
                FORK_COPY_HOOK_TIMEOUT.as_secs(),
                body.trim()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
