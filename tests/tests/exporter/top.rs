//! `mmuscope top` in tmux shows the workload's cgroup with its figures.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mmuscope_tests::eco::tmux::Tmux;
use mmuscope_tests::harness::Agent;

use super::{READY_TIMEOUT, require, workload};

#[test]
fn top_in_tmux_shows_the_workload_cgroup() {
    let Some(env) = require(&[("tmux", "MMUSCOPE_TMUX")]) else { return };
    let agent = Agent::start_with(&env.agent_bin, &[], READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<()> {
        let (_guard, truth) = workload(&env, &format!("eco-top-{}", std::process::id()), 2_000)?;
        let label = truth.cgroups.attributed().path.to_string();
        let expected = truth.expected_tracepoint_total().to_string();
        let cmd = format!("{} top --url {} --interval 500ms", env.agent_bin.display(), agent.base_url());
        let t = Tmux::start("mmuscope-top", &cmd, 220, 40)?;
        let has_row = |s: &str| s.lines().any(|l| l.contains(&label) && l.split_whitespace().any(|w| w == expected));
        // The second poll has a rate (INV/S) for the row too. The workload ended before `top` started, so the
        // ground truth for the rate between two polls is exactly no new invalidation: `0.0`.
        let with_rate = |s: &str| {
            s.lines().any(|l| {
                l.contains(&label)
                    && l.split_whitespace().any(|w| w == expected)
                    && l.split_whitespace().next() == Some("0.0")
            })
        };
        let screen = t.wait_for_screen(Duration::from_secs(15), with_rate)?;
        println!("--- tmux capture-pane (sort: rate) ---\n{}\n---", screen.trim_end());
        ensure!(with_rate(&screen), "top does not show {label} with {expected} invalidations and a rate of 0.0");
        ensure!(screen.contains("sort: rate"), "header missing");
        t.send_keys("s")?;
        let screen = t.wait_for_screen(Duration::from_secs(5), |s| s.contains("sort: total"))?;
        println!("--- after `s` ---\n{}\n---", screen.lines().take(6).collect::<Vec<_>>().join("\n"));
        ensure!(screen.contains("sort: total") && has_row(&screen), "`s` did not switch to sort by total");
        t.send_keys("q")?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.pane_dead()? {
            ensure!(Instant::now() < deadline, "top did not exit on `q`");
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    })();
    agent.finish(result);
}
