//! Hardening, persistence (root, bpffs): with `--pin DIR` the counters continue across a restart of the agent — a
//! cgroup's `mmuscope_invalidations_total` counted before the restart is still its ground truth after it, and new
//! work counts on top — and a pinned map of another size (`--map.stats-entries`) is refused with exit 2 naming the file. Without `--pin`
//! the restart starts from zero (and `hardening_restarts` checks that nothing is left behind).
//!
//! Run: `cargo test -p mmuscope-tests --test hardening_pin -- --test-threads=1 --nocapture` (`host` tier).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mmuscope_tests::hardening::kvm_madvise;
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::harness::{Agent, HostEnv, counter_by_cgroup};

const READY: Duration = Duration::from_secs(60);
const PARENT: &str = "/mmuscope-hardening";

#[test]
fn pinned_counters_continue_across_a_restart_and_unpinned_ones_do_not() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    // A bpffs of our own (the host may not mount one at /sys/fs/bpf); unmounting it unpins everything.
    let mount = std::env::temp_dir().join(format!("mmuscope-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&mount).expect("creating the bpffs mount point");
    let mounted = std::process::Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&mount).status();
    assert!(mounted.is_ok_and(|s| s.success()), "mount -t bpf bpf {} failed", mount.display());
    let dir = mount.join("mmuscope");
    let result = pinned_case(&env, &dir);
    let _ = std::process::Command::new("umount").arg(&mount).status();
    let _ = std::fs::remove_dir(&mount);
    result.unwrap_or_else(|e| panic!("{e:#}"));
    unpinned_case(&env).unwrap_or_else(|e| panic!("{e:#}"));
}

/// The cgroup's invalidation counter as the agent at `agent` reports it (0 when absent).
fn counter(agent: &Agent, cgroup: &str) -> Result<f64> {
    Ok(counter_by_cgroup(&agent.scraper().metrics()?, INVALIDATIONS).get(cgroup).copied().unwrap_or(0.0))
}

/// Waits until the counter reaches `want` (or a few seconds pass), then returns it.
fn settled(agent: &Agent, cgroup: &str, want: f64) -> Result<f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = counter(agent, cgroup)?;
        if n >= want || std::time::Instant::now() > deadline {
            std::thread::sleep(Duration::from_millis(500));
            return counter(agent, cgroup);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pinned_case(env: &HostEnv, dir: &Path) -> Result<()> {
    let pin = format!("--pin={}", dir.display());
    let name = format!("pin-{}", std::process::id());
    let agent = Agent::start_with(&env.agent_bin, &[&pin], READY)?;
    let (guard, first) = kvm_madvise(env, PARENT, &name, 300)?;
    let cgroup = first.cgroups.attributed().path.as_str().to_owned();
    let after_first = settled(&agent, &cgroup, first.expected_tracepoint_total() as f64)?;
    agent.stop()?;
    ensure!(dir.join("KVM_UNMAP_COUNTS").exists(), "nothing pinned in {}", dir.display());

    let agent = Agent::start_with(&env.agent_bin, &[&pin], READY)?;
    let at_restart = counter(&agent, &cgroup)?;
    // More work after the restart, in a second cgroup (a workload cgroup cannot be entered twice): both counters
    // must equal their own truths, the first one carried over from before the restart.
    let (_guard2, second) = kvm_madvise(env, PARENT, &format!("{name}-b"), 200)?;
    let cgroup2 = second.cgroups.attributed().path.as_str().to_owned();
    let second_total = settled(&agent, &cgroup2, second.expected_tracepoint_total() as f64)?;
    let first_total = counter(&agent, &cgroup)?;
    agent.stop()?;
    drop(guard);
    println!(
        "--pin: first cgroup {after_first} before the restart (truth {}), {at_restart} right after it, {first_total} \
         at the end; second cgroup {second_total} (truth {})",
        first.expected_tracepoint_total(),
        second.expected_tracepoint_total()
    );
    let want_first = first.expected_tracepoint_total() as f64;
    ensure!(after_first == want_first, "first run counted {after_first}, truth {want_first}");
    ensure!(
        at_restart == want_first,
        "the restarted agent reports {at_restart} for the first cgroup, truth {want_first}"
    );
    ensure!(first_total == want_first, "the first cgroup ends at {first_total}, truth {want_first}");
    ensure!(second_total == second.expected_tracepoint_total() as f64, "second run counted {second_total}");

    // The same pins with another map size: refused, exit 2, the file named; the pins stay as they were.
    let out = std::process::Command::new(&env.agent_bin)
        .args(["run", &pin, "--map.stats-entries=32", "--web.listen-address=127.0.0.1:0"])
        .output()
        .context("running the agent with a mismatching --map.stats-entries")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--pin with --map.stats-entries=32: {} {}", out.status, stderr.lines().last().unwrap_or_default());
    ensure!(out.status.code() == Some(2), "exit {:?}, expected 2: {stderr}", out.status.code());
    ensure!(stderr.contains("different map layout") && stderr.contains(&dir.display().to_string()), "{stderr}");
    Ok(())
}

fn unpinned_case(env: &HostEnv) -> Result<()> {
    let name = format!("nopin-{}", std::process::id());
    let agent = Agent::start(&env.agent_bin, READY)?;
    let (_guard, run) = kvm_madvise(env, PARENT, &name, 300)?;
    let cgroup = run.cgroups.attributed().path.as_str().to_owned();
    let before = settled(&agent, &cgroup, run.expected_tracepoint_total() as f64)?;
    agent.stop()?;
    let agent = Agent::start(&env.agent_bin, READY)?;
    let after = counter(&agent, &cgroup)?;
    agent.stop()?;
    println!("no --pin: {before} before the restart, {after} after it");
    ensure!(before == run.expected_tracepoint_total() as f64, "first run counted {before}");
    ensure!(after == 0.0, "without --pin the restarted agent still reports {after}");
    Ok(())
}
