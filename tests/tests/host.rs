//! Host integration test (root, /dev/kvm, this machine's kernel): the agent in tracepoint mode plus the workload in
//! fresh cgroups; `mmuscope_invalidations_total` for the workload's cgroup must equal its ground truth exactly, and
//! no other cgroup's counter may move meanwhile.
//!
//! Run: `cargo test -p mmuscope-tests --test host -- --test-threads=1 --nocapture` (the agent binary must be built;
//! `MMUSCOPE_AGENT_BIN` / `MMUSCOPE_WORKLOAD_BIN` override the paths). Outside CI a missing prerequisite skips the
//! test loudly; with `CI=true` it fails.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use mmuscope_tests::cgroup::CgroupPath;
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::harness::{Agent, CgroupGuard, HostEnv, Scraper, changed_cgroups, counter_by_cgroup, run_workload};
use mmuscope_tests::truth::NotifyEvent;

/// Loading and attaching the eBPF programs may take a while on a cold machine.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long counters may take to show up in `/metrics` after the workload exited.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the expected value appears, wait this long and scrape again to catch late extra events.
const QUIET_PERIOD: Duration = Duration::from_millis(500);
const CGROUP_PARENT: &str = "/mmuscope-test";

#[test]
fn kvm_madvise_counts_equal_ground_truth() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    let agent = Agent::start(&env.agent_bin, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    println!("agent pid {} ready at {}", agent.pid(), agent.base_url());
    let scraper = agent.scraper();

    // Every case runs even if an earlier one failed, so one run shows all mismatches.
    let failures: Vec<String> = [1_000u64, 20_000]
        .into_iter()
        .filter_map(|n| kvm_madvise_case(&env, &scraper, n).err().map(|e| format!("kvm-madvise N={n}: {e:#}")))
        .collect();
    let tail = agent.output_tail();
    if let Err(e) = agent.stop() {
        panic!("{e:#}{}", report(&failures));
    }
    assert!(failures.is_empty(), "{}\n--- agent output tail ---\n{tail}", report(&failures));
}

/// One workload run in its own cgroup, compared against scrapes before and after.
fn kvm_madvise_case(env: &HostEnv, scraper: &Scraper, n: u64) -> Result<()> {
    let name = format!("kvm-madvise-h{}-n{n}", std::process::id());
    let rel = CgroupPath::parse(CGROUP_PARENT)?.join(&name)?;
    let _guard = CgroupGuard::new(env.hierarchies.clone(), rel.clone()); // removes the cgroups however we leave

    let before = counter_by_cgroup(&scraper.metrics()?, INVALIDATIONS);
    let iterations = n.to_string();
    let args = ["kvm-madvise", "--iterations", &iterations, "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name];
    let truth = run_workload(&env.workload_bin, args)?;
    ensure!(
        truth.invalidations.brackets.get(&NotifyEvent::Clear) == Some(&n),
        "workload truth does not describe the requested run: {:?}",
        truth.invalidations.brackets
    );

    let cg = truth.cgroups.attributed();
    let label = cg.path.as_str();
    let expected = truth.expected_tracepoint_total();
    let after = settle(scraper, label, before.get(label).copied().unwrap_or(0.0) + expected as f64)?;
    let observed = after.get(label).copied().unwrap_or(0.0) - before.get(label).copied().unwrap_or(0.0);
    println!(
        "kvm-madvise N={n}: cgroup {label} ({:?} id {}, pid {}): expected {expected}, observed {observed}",
        truth.cgroups.attribution, cg.id, truth.pid
    );

    let mut others = changed_cgroups(&before, &after);
    others.retain(|(c, _, _)| c != label);
    for (c, b, a) in &others {
        println!("  other cgroup changed meanwhile: {c:?}: {b} -> {a}");
    }
    ensure!(
        observed == expected as f64,
        "{INVALIDATIONS}{{cgroup={label:?}}} grew by {observed}, ground truth says {expected}"
    );
    ensure!(
        others.is_empty(),
        "{} other cgroup(s) changed during the run (see above); is something else on this host using KVM?",
        others.len()
    );
    Ok(())
}

/// Scrapes until `label` reaches `target` (or the timeout), then once more after a quiet period, and returns the
/// last per-cgroup sums. Exactness is judged by the caller on that last scrape.
fn settle(scraper: &Scraper, label: &str, target: f64) -> Result<BTreeMap<String, f64>> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let now = counter_by_cgroup(&scraper.metrics()?, INVALIDATIONS);
        if now.get(label).copied().unwrap_or(0.0) >= target || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(QUIET_PERIOD);
    Ok(counter_by_cgroup(&scraper.metrics().context("final scrape")?, INVALIDATIONS))
}

fn report(failures: &[String]) -> String {
    failures.iter().map(|f| format!("\n  FAILED {f}")).collect()
}
