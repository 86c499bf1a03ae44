//! Host integration test (root, /dev/kvm, this machine's kernel): the agent in tracepoint mode plus the workload in
//! fresh cgroups; `mmuscope_invalidations_total` for the workload's cgroup must equal its ground truth exactly, and
//! no other cgroup's counter may move meanwhile. The second test runs every other scenario this host can (not
//! `swap-out`: no swap) against one agent: invalidations per cgroup (tracepoint mode attributes a KVM callback to
//! the emitting task's cgroup, so `cross-cgroup` counts at the initiator's) and the fork-copy families.
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
use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::{GroundTruth, NotifyEvent};

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

/// Scenarios of the second test, with small sizes (each also runs in the VM tier with the same truth).
const SCENARIOS: &[&[&str]] = &[
    &["kvm-munmap", "--iterations", "500"],
    &["kvm-munmap", "--iterations", "200", "--untouched"],
    &["kvm-mprotect", "--iterations", "500"],
    &["thp-partial-munmap", "--iterations", "4"],
    &["multi-vm", "--iterations", "300", "--vms", "3"],
    &["cross-cgroup", "--regions", "2"],
    &["fork-pinned", "--pages", "64"],
    &["fork-pinned", "--pages", "64", "--fork-from-sibling-memcg"],
    &["fork-pinned-thp"],
    &["fork-unpinned", "--pages", "64"],
];
const FORK_COPIES: &str = "mmuscope_fork_pinned_page_copies_total";
const FORK_BYTES: &str = "mmuscope_fork_pinned_copy_bytes_total";
const FORKS_WITH_PINNED: &str = "mmuscope_forks_with_pinned_pages_total";

#[test]
fn scenarios_count_exactly_in_tracepoint_mode() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    let agent = Agent::start(&env.agent_bin, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    println!("agent pid {} ready at {}", agent.pid(), agent.base_url());
    let scraper = agent.scraper();
    let failures: Vec<String> = SCENARIOS
        .iter()
        .enumerate()
        .filter_map(|(i, args)| {
            scenario_case(&env, &scraper, i, args).err().map(|e| format!("{}: {e:#}", args.join(" ")))
        })
        .collect();
    let tail = agent.output_tail();
    if let Err(e) = agent.stop() {
        panic!("{e:#}{}", report(&failures));
    }
    assert!(failures.is_empty(), "{}\n--- agent output tail ---\n{tail}", report(&failures));
}

/// One expected value: `family{cgroup=…[, cause=…]}` must grow by exactly `delta`.
#[derive(Debug)]
struct Expect {
    family: &'static str,
    cgroup: String,
    /// Only the series with this `cause` label.
    cause: Option<String>,
    delta: f64,
}

impl Expect {
    fn new(family: &'static str, cgroup: &str, delta: u64) -> Self {
        Self { family, cgroup: cgroup.to_owned(), cause: None, delta: delta as f64 }
    }

    fn describe(&self) -> String {
        match &self.cause {
            Some(c) => format!("{}{{cgroup={:?}, cause={c:?}}}", self.family, self.cgroup),
            None => format!("{}{{cgroup={:?}}}", self.family, self.cgroup),
        }
    }
}

fn scenario_case(env: &HostEnv, scraper: &Scraper, index: usize, args: &[&str]) -> Result<()> {
    let name = format!("{}-h{}-{index}", args[0], std::process::id());
    let parent = CgroupPath::parse(CGROUP_PARENT)?;
    // Removed however we leave; the initiator's cgroup exists only for cross-cgroup (absent is fine).
    let _guard = CgroupGuard::new(env.hierarchies.clone(), parent.join(&name)?);
    let _initiator = CgroupGuard::new(env.hierarchies.clone(), parent.join(&format!("{name}-initiator"))?);

    let before = scraper.metrics()?;
    let mut full: Vec<&str> = args.to_vec();
    full.extend(["--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name]);
    // The agent attaches the fork-copy hook once it has seen the pin; the workload waits for that before forking.
    let base = scraper.base().to_owned();
    if matches!(args[0], "fork-pinned" | "fork-pinned-thp" | "fork-unpinned") {
        full.extend(["--agent-url", &base]);
    }
    let truth = run_workload(&env.workload_bin, &full)?;
    let expects = expectations(&truth)?;
    let after = settle_all(scraper, &before, &expects)?;

    let mut problems = Vec::new();
    for e in &expects {
        let observed = delta(&before, &after, e);
        println!("{} {}: expected {}, observed {observed}", args.join(" "), e.describe(), e.delta);
        if observed != e.delta {
            problems.push(format!("{} grew by {observed}, ground truth says {}", e.describe(), e.delta));
        }
    }
    let ours: Vec<&str> = expects.iter().map(|e| e.cgroup.as_str()).collect();
    let mut others =
        changed_cgroups(&counter_by_cgroup(&before, INVALIDATIONS), &counter_by_cgroup(&after, INVALIDATIONS));
    others.retain(|(c, _, _)| !ours.contains(&c.as_str()));
    for (c, b, a) in &others {
        problems.push(format!("other cgroup {c:?} changed meanwhile: {b} -> {a} (something else using KVM?)"));
    }
    ensure!(problems.is_empty(), "{}", problems.join("; "));
    Ok(())
}

/// What tracepoint mode must show for this truth: invalidations per cgroup (and per cause where the events all
/// land in one cgroup), and the fork families of the owner.
fn expectations(truth: &GroundTruth) -> Result<Vec<Expect>> {
    let by_cgroup = truth.expected_tracepoint_by_cgroup()?;
    let mut out: Vec<Expect> = by_cgroup.iter().map(|(cgroup, n)| Expect::new(INVALIDATIONS, cgroup, *n)).collect();
    let owner = truth.cgroups.attributed().path.as_str().to_owned();
    if out.is_empty() {
        out.push(Expect::new(INVALIDATIONS, &owner, 0));
    }
    if let ([(cgroup, _)], Some(causes)) =
        (&by_cgroup.iter().collect::<Vec<_>>()[..], truth.invalidations.kvm_unmaps_by_cause())
    {
        for (cause, n) in causes {
            out.push(Expect { cause: Some(cause), ..Expect::new(INVALIDATIONS, cgroup, n) });
        }
    }
    if let Some(f) = &truth.fork {
        for (family, v) in [
            (FORK_COPIES, f.copied_pages),
            (FORK_BYTES, f.copied_bytes),
            (FORKS_WITH_PINNED, f.forks_with_pinned_pages),
        ] {
            out.push(Expect::new(family, &owner, v));
            // Attribution is to the mm owner's memory cgroup, never to the forking thread's (cgroup v1).
            if let Some(forker) = &f.forker_cgroup {
                out.push(Expect::new(family, forker, 0));
            }
        }
    }
    Ok(out)
}

fn delta(before: &Exposition, after: &Exposition, e: &Expect) -> f64 {
    let get = |x: &Exposition| -> f64 {
        x.samples_named(e.family)
            .filter(|s| s.labels.get("cgroup").is_some_and(|c| *c == e.cgroup))
            .filter(|s| e.cause.as_ref().is_none_or(|c| s.labels.get("cause") == Some(c)))
            .map(|s| s.value)
            .sum()
    };
    get(after) - get(before)
}

/// Scrapes until every expectation is reached (or the timeout), then once more after a quiet period.
fn settle_all(scraper: &Scraper, before: &Exposition, expects: &[Expect]) -> Result<Exposition> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let now = scraper.metrics()?;
        let reached = expects.iter().all(|e| delta(before, &now, e) >= e.delta);
        if reached || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    thread::sleep(QUIET_PERIOD);
    scraper.metrics().context("final scrape")
}

/// The subscriber inventory (iter/task sweep) against held workloads: KVM subscriptions and io_uring pins.
#[test]
fn subscriber_inventory_lists_held_workloads() {
    use mmuscope_tests::harness::inventory;
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    let agent = Agent::start(&env.agent_bin, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let scraper = agent.scraper();
    let parent = CgroupPath::parse(CGROUP_PARENT).unwrap();
    let mut failures = Vec::new();
    let kvm = format!("multi-vm-inv-h{}", std::process::id());
    let _kvm_guard = CgroupGuard::new(env.hierarchies.clone(), parent.join(&kvm).unwrap());
    if let Err(e) = inventory::kvm_case(&env, &scraper, CGROUP_PARENT, &kvm, 2) {
        failures.push(format!("multi-vm --vms 2 --hold: {e:#}"));
    }
    let pinned = format!("fork-pinned-inv-h{}", std::process::id());
    let _pinned_guard = CgroupGuard::new(env.hierarchies.clone(), parent.join(&pinned).unwrap());
    if let Err(e) = inventory::pinned_case(&env, &scraper, CGROUP_PARENT, &pinned, 64) {
        failures.push(format!("fork-pinned --pages 64 --hold: {e:#}"));
    }
    let arming = format!("fork-arming-h{}", std::process::id());
    let _arming_guard = CgroupGuard::new(env.hierarchies.clone(), parent.join(&arming).unwrap());
    let _waits_guard = CgroupGuard::new(env.hierarchies.clone(), parent.join(&format!("{arming}-waits")).unwrap());
    if let Err(e) = inventory::arming_case(&env, &scraper, CGROUP_PARENT, &arming, 64) {
        failures.push(format!("fork-copy hook on demand: {e:#}"));
    }
    let tail = agent.output_tail();
    if !tail.contains(inventory::ATTACHED_BY_A_FORK) {
        failures
            .push(format!("no log line says a fork attached the fork-copy hook ({:?})", inventory::ATTACHED_BY_A_FORK));
    }
    if let Err(e) = agent.stop() {
        panic!("{e:#}{}", report(&failures));
    }
    assert!(failures.is_empty(), "{}\n--- agent output tail ---\n{tail}", report(&failures));
}

/// `--bpf.run-stats` is off by default, because BPF_ENABLE_STATS slows every eBPF program of the host: without it
/// the agent holds no `bpf-stats` fd and exports no program series. With it, `kvm_unmap_tp_btf`'s run count grows by
/// exactly the workload's `kvm_unmap_hva_range` events.
#[test]
fn program_run_stats_only_when_asked_for() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    let mut failures = Vec::new();
    for asked in [false, true] {
        let args: &[&str] = if asked { &["--bpf.run-stats"] } else { &[] };
        let agent = Agent::start_with(&env.agent_bin, args, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
        if let Err(e) = run_stats_case(&env, &agent, asked) {
            failures
                .push(format!("--bpf.run-stats {asked}: {e:#}\n--- agent output tail ---\n{}", agent.output_tail()));
        }
        agent.stop().unwrap_or_else(|e| panic!("{e:#}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn run_stats_case(env: &HostEnv, agent: &Agent, asked: bool) -> Result<()> {
    const RUNS: &str = "mmuscope_bpf_program_runs_total";
    let fds = std::fs::read_dir(format!("/proc/{}/fd", agent.pid()))?
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.as_os_str() == "anon_inode:bpf-stats")
        .count();
    let scraper = agent.scraper();
    let runs = |e: &Exposition| {
        e.samples_named(RUNS)
            .find(|s| s.labels.get("program").map(String::as_str) == Some("kvm_unmap_tp_btf"))
            .map(|s| s.value)
    };
    let before = scraper.metrics()?;
    let name = format!("run-stats-h{}-{asked}", std::process::id());
    let rel = CgroupPath::parse(CGROUP_PARENT)?.join(&name)?;
    let _guard = CgroupGuard::new(env.hierarchies.clone(), rel);
    let args = ["kvm-madvise", "--iterations", "1000", "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name];
    let truth = run_workload(&env.workload_bin, args)?;
    let expected = truth.expected_tracepoint_total();
    let label = truth.cgroups.attributed().path.to_string();
    settle(&scraper, &label, expected as f64)?;
    let after = scraper.metrics()?;
    let program_series = after.samples.iter().filter(|s| s.name.starts_with("mmuscope_bpf_program_")).count();
    let grew = runs(&after).zip(runs(&before)).map(|(a, b)| a - b);
    println!(
        "--bpf.run-stats {asked}: bpf-stats fds {fds}, program series {program_series}, kvm_unmap_tp_btf runs grew by \
         {grew:?} for {expected} kvm_unmap_hva_range events"
    );
    if asked {
        ensure!(fds == 1, "the agent holds {fds} bpf-stats fds, want 1");
        ensure!(
            grew == Some(expected as f64),
            "{RUNS}{{program=\"kvm_unmap_tp_btf\"}} grew by {grew:?}, want {expected}"
        );
    } else {
        ensure!(fds == 0, "the agent holds {fds} bpf-stats fds without --bpf.run-stats");
        ensure!(program_series == 0, "{program_series} mmuscope_bpf_program_* series without --bpf.run-stats");
    }
    Ok(())
}

/// A cgroup created, counted and removed between two scrapes (a short `systemd-run --scope`, a job's service) keeps
/// its name: the agent learns cgroups when they are created (`cgroup_mkdir`), not only from cgroupfs walks at scrape
/// time, which no longer find it. Found on a booted Debian host by the `fleet` tier (docs/hardening.md).
#[test]
fn a_cgroup_removed_before_the_next_scrape_keeps_its_name() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    let agent = Agent::start(&env.agent_bin, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let scraper = agent.scraper();
    let result = (|| -> Result<()> {
        // A scrape (and its cgroupfs walk) before the cgroup exists.
        let before = counter_by_cgroup(&scraper.metrics()?, INVALIDATIONS);
        let name = format!("short-lived-h{}", std::process::id());
        let rel = CgroupPath::parse(CGROUP_PARENT)?.join(&name)?;
        let guard = CgroupGuard::new(env.hierarchies.clone(), rel.clone());
        let args = ["kvm-madvise", "--iterations", "300", "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name];
        let truth = run_workload(&env.workload_bin, args)?;
        drop(guard); // removed before anything scrapes again
        let label = truth.cgroups.attributed().path.as_str().to_owned();
        let expected = truth.expected_tracepoint_total() as f64;
        let after = settle(&scraper, &label, expected)?;
        let observed = after.get(&label).copied().unwrap_or(0.0);
        let unknown = after.get("unknown").copied().unwrap_or(0.0) - before.get("unknown").copied().unwrap_or(0.0);
        println!("removed cgroup {label}: expected {expected}, observed {observed}; `unknown` grew by {unknown}");
        ensure!(
            observed == expected,
            "{INVALIDATIONS}{{cgroup={label:?}}} is {observed}, ground truth says {expected}"
        );
        ensure!(unknown == 0.0, "{unknown} invalidations went to cgroup=\"unknown\"");
        Ok(())
    })();
    let tail = agent.output_tail();
    agent.stop().unwrap_or_else(|e| panic!("{e:#}"));
    if let Err(e) = result {
        panic!("{e:#}\n--- agent output tail ---\n{tail}");
    }
}
