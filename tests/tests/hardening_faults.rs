//! Hardening, kernel faults (root, /dev/kvm, this machine's kernel in tracepoint mode):
//!
//! * `--probes.deny` makes the planner see a kernel without a tracepoint, an enumerator or a family: exactly the
//!   affected family is unavailable (in `check --json` with its reason, and `probe_attached` 0), the other keeps
//!   counting the workload exactly;
//! * `--btf` pointing at nothing, at garbage, or at a foreign BTF: a clear error, or every family unavailable with
//!   the missing members named — never a crash;
//! * aggregation maps sized far too small (`--map.stats-entries 16`): the overflow is counted in
//!   `map_update_errors_total`, the agent keeps running and every cgroup that got an entry counts exactly;
//! * cgroup churn: 5,000 cgroups created, given counts and deleted in rounds: every series and map entry of a
//!   deleted cgroup is gone after `--cgroups.deleted-ttl`, and the agent's RSS is printed per round.
//!
//! Run: `cargo test -p mmuscope-tests --test hardening_faults -- --test-threads=1 --nocapture` (the `host` tier).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aya::maps::{MapData, PerCpuHashMap};
use mmuscope_abi::CgroupKey;
use mmuscope_tests::cgroup::CgroupPath;
use mmuscope_tests::eco::inject;
use mmuscope_tests::hardening::{fork_pinned_counts_exactly, kvm_madvise, run_to_exit};
use mmuscope_tests::harness::scrape::INVALIDATIONS;
use mmuscope_tests::harness::{Agent, HostEnv, counter_by_cgroup, scrape_until};
use mmuscope_tests::promtext::Exposition;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CGROUP_PARENT: &str = "/mmuscope-hardening";

/// `probe_attached` values per family.
fn attached_by_family(e: &Exposition) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in e.samples_named("mmuscope_probe_attached") {
        let family = s.labels.get("probe").cloned().unwrap_or_default();
        *out.entry(family).or_insert(0.0) += s.value;
    }
    out
}

fn sample(e: &Exposition, name: &str, label: (&str, &str)) -> f64 {
    e.samples_named(name).filter(|s| s.labels.get(label.0).map(String::as_str) == Some(label.1)).map(|s| s.value).sum()
}

/// Family → (attached alternative and its number of targets, `name: reason` of the others).
type Plan = BTreeMap<String, (Option<(String, usize)>, Vec<String>)>;

/// `mmuscope check --json` with `args`.
fn check_json(bin: &Path, args: &[&str]) -> Result<Plan> {
    let out = std::process::Command::new(bin).arg("check").arg("--json").args(args).output()?;
    ensure!(out.status.success(), "check {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("check --json output")?;
    let mut families = BTreeMap::new();
    for f in v["families"].as_array().context("families")? {
        let mut attached = None;
        let mut reasons = Vec::new();
        for a in f["alternatives"].as_array().context("alternatives")? {
            if a["status"] == "attached" {
                let targets = a["targets"].as_array().map_or(0, Vec::len);
                attached = a["name"].as_str().map(|name| (name.to_owned(), targets));
            } else {
                reasons.push(format!("{}: {}", a["name"].as_str().unwrap_or("?"), a["reason"].as_str().unwrap_or("")));
            }
        }
        families.insert(f["name"].as_str().unwrap_or("?").to_owned(), (attached, reasons));
    }
    Ok(families)
}

#[test]
fn a_missing_kernel_name_disables_only_its_family() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let baseline = check_json(&env.agent_bin, &[]).unwrap_or_else(|e| panic!("{e:#}"));
    for f in ["brackets", "fork_copies"] {
        assert!(baseline[f].0.is_some(), "{f} does not attach on this host even without --probes.deny: {baseline:?}");
    }
    // (denied name, the family that must go, a reason it must give, the family that must stay)
    let cases = [
        ("fork_copies", "fork_copies", "family fork_copies denied by --probes.deny", "brackets"),
        ("___GFP_DIRECT_RECLAIM_BIT", "fork_copies", "BTF lacks enumerator ___GFP_DIRECT_RECLAIM_BIT", "brackets"),
        ("task_newtask", "fork_copies", "no btf_trace_task_newtask in vmlinux BTF", "brackets"),
        ("kvm_unmap_hva_range", "brackets", "no btf_trace_kvm_unmap_hva_range in vmlinux BTF", "fork_copies"),
    ];
    let mut failures = Vec::new();
    for (deny, gone, reason, kept) in cases {
        if let Err(e) = deny_case(&env, deny, gone, reason, kept) {
            failures.push(format!("--probes.deny {deny}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn deny_case(env: &HostEnv, deny: &str, gone: &str, reason: &str, kept: &str) -> Result<()> {
    let plan = check_json(&env.agent_bin, &["--probes.deny", deny])?;
    let (gone_attached, gone_reasons) = &plan[gone];
    println!("--probes.deny {deny}: check: {gone} attached={gone_attached:?}; {kept} attached={:?}", plan[kept].0);
    for r in gone_reasons {
        println!("    {gone} {r}");
    }
    ensure!(gone_attached.is_none(), "{gone} still attached");
    ensure!(gone_reasons.iter().any(|r| r.contains(reason)), "no reason mentions {reason:?}");
    ensure!(plan[kept].0.is_some(), "{kept} lost too");

    // The daemon: listening and ready even when a required family is missing (loose attachment; /readyz names it).
    let agent = Agent::start_with(&env.agent_bin, &["--probes.deny", deny], READY_TIMEOUT)?;
    let result = (|| -> Result<()> {
        let scraper = agent.scraper();
        let e = scraper.metrics()?;
        let attached = attached_by_family(&e);
        let (ready, body) = scraper.get("/readyz")?;
        println!("    /metrics probe_attached by family {attached:?}; /readyz {ready} {}", body.trim());
        // One probe_attached series per attach target: the sum is 0 for a family that is not attached.
        ensure!(attached.get(gone) == Some(&0.0), "probe_attached for {gone}: {:?}", attached.get(gone));
        // The kept family: one series of value 1 per target of the alternative the plan attaches, exactly.
        let targets = plan[kept].0.as_ref().map_or(0, |(_, targets)| *targets);
        ensure!(targets > 0, "check --json lists no target for {kept}'s attached alternative: {:?}", plan[kept]);
        ensure!(
            attached.get(kept) == Some(&(targets as f64)),
            "probe_attached for {kept}: {:?}, the plan attaches {targets} target(s)",
            attached.get(kept)
        );
        // Both families are required: /readyz says which one is missing, and is ready anyway.
        ensure!(
            ready == 200 && body.contains(gone),
            "/readyz must be 200 and name the missing family {gone}: {ready} {body}"
        );
        // The family that stayed still counts exactly: fork copies against the PFN truth when brackets are denied,
        // brackets against kvm-madvise's truth otherwise.
        if gone == "brackets" {
            let name = format!("deny-{}-fork-{}", deny, std::process::id());
            return fork_pinned_counts_exactly(env, &scraper, CGROUP_PARENT, &name);
        }
        let name = format!("deny-{}-{}", gone, std::process::id());
        let (_guard, truth) = kvm_madvise(env, CGROUP_PARENT, &name, 400)?;
        let label = truth.cgroups.attributed().path.to_string();
        let expected = truth.expected_tracepoint_total() as f64;
        let got = wait_for_count(&agent, &label, expected)?;
        println!("    kvm-madvise in {label}: ground truth {expected}, /metrics {got}");
        ensure!(got == expected, "{label}: {got} != ground truth {expected}");
        Ok(())
    })();
    finish_result(agent, result)
}

fn finish_result(agent: Agent, result: Result<()>) -> Result<()> {
    let tail = agent.output_tail();
    let stopped = agent.stop();
    result.map_err(|e| anyhow::anyhow!("{e:#}\n--- agent output tail ---\n{tail}"))?;
    stopped
}

/// The cgroup's invalidation count once it equals `expected` (or the last value after 10 s).
fn wait_for_count(agent: &Agent, label: &str, expected: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = counter_by_cgroup(&agent.scraper().metrics()?, INVALIDATIONS).get(label).copied().unwrap_or(0.0);
        if got == expected || Instant::now() >= deadline {
            // A quiet period: late extra events would show now.
            std::thread::sleep(Duration::from_millis(300));
            return Ok(counter_by_cgroup(&agent.scraper().metrics()?, INVALIDATIONS)
                .get(label)
                .copied()
                .unwrap_or(0.0));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn absent_garbage_and_foreign_btf_are_clear_errors() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let bin = &env.agent_bin;
    let dir = std::env::temp_dir().join(format!("mmuscope-hardening-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.btf");
    std::fs::write(&garbage, b"\x9f\xeb\x01\x00 not really BTF").unwrap();
    let mut failures = Vec::new();
    let t = Duration::from_secs(60);
    for (case, path, needles) in [
        (
            "no such file",
            Path::new("/nonexistent/vmlinux"),
            &["cannot read BTF from /nonexistent/vmlinux", "No such file"][..],
        ),
        ("garbage", garbage.as_path(), &["cannot read BTF from", "garbage.btf"][..]),
    ] {
        for cmd in ["run", "check"] {
            let p = path.to_str().unwrap();
            match run_to_exit(
                bin,
                &[cmd, "--btf", p, "--web.listen-address", "127.0.0.1:1"][..if cmd == "run" { 5 } else { 3 }],
                t,
            ) {
                Ok((code, stderr)) => {
                    println!("{cmd} --btf {case}: exit {code}: {}", stderr.lines().last().unwrap_or_default());
                    let missing: Vec<_> = needles.iter().filter(|n| !stderr.contains(**n)).collect();
                    if code != 1 || !missing.is_empty() {
                        failures.push(format!("{cmd} --btf {case}: exit {code}, missing {missing:?}: {stderr}"));
                    }
                }
                Err(e) => failures.push(format!("{cmd} --btf {case}: {e:#}")),
            }
        }
    }
    // A foreign BTF (a few kernel-named types from clang, the fuzz seed): the plan says what is missing, per family.
    // Opt-in families are switched on, so that every family is planned against the BTF.
    let foreign = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/fuzz/seeds/btf_plan/kernel_subset.btf");
    match check_json(bin, &["--btf", foreign.to_str().unwrap(), "--probes.ksm-cow"]) {
        Ok(plan) => {
            for (family, (attached, reasons)) in &plan {
                println!("check --btf kernel_subset.btf: {family}: attached {attached:?}; {}", reasons.join(" | "));
                if attached.is_some()
                    || !reasons.iter().any(|r| {
                        r.contains("BTF lacks") || r.contains("not a function in BTF") || r.contains("in vmlinux BTF")
                    })
                {
                    failures.push(format!("foreign BTF: {family} attached {attached:?} or no BTF reason: {reasons:?}"));
                }
            }
        }
        Err(e) => failures.push(format!("check --btf foreign: {e:#}")),
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_too_small_map_counts_its_overflow_and_keeps_the_rest_exact() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    // 16 entries (the minimum) for 24 busy cgroups; fork_copies off so that only the workloads create keys.
    let args = ["--map.stats-entries", "16", "--probes.deny", "fork_copies"];
    let agent = Agent::start_with(&env.agent_bin, &args, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let result = (|| -> Result<()> {
        let before = agent.scraper().metrics()?;
        let errors_before = sample(&before, "mmuscope_map_update_errors_total", ("map", "stats"));
        let mut runs = Vec::new();
        for i in 0..24u64 {
            let name = format!("tiny-map-{}-{i}", std::process::id());
            runs.push(kvm_madvise(&env, CGROUP_PARENT, &name, 50 + i)?);
        }
        // Every event of ours either counts for its cgroup or was dropped with an error: scrape until the two
        // together account for the truths' total (the workloads have exited, so no event is still to come).
        let ours: f64 = runs.iter().map(|(_, t)| t.expected_tracepoint_total() as f64).sum();
        let accounted = |e: &Exposition| {
            let counts = counter_by_cgroup(e, INVALIDATIONS);
            let counted: f64 =
                runs.iter().filter_map(|(_, t)| counts.get(&t.cgroups.attributed().path.to_string())).sum();
            counted + sample(e, "mmuscope_map_update_errors_total", ("map", "stats")) - errors_before >= ours
        };
        let after = scrape_until(&agent.scraper(), Duration::from_secs(10), accounted)?;
        let errors = sample(&after, "mmuscope_map_update_errors_total", ("map", "stats")) - errors_before;
        let entries = sample(&after, "mmuscope_map_entries", ("map", "kvm_unmap_counts"));
        let counts = counter_by_cgroup(&after, INVALIDATIONS);
        let (mut fitted, mut dropped_events, mut wrong) = (0, 0u64, Vec::new());
        for (_guard, truth) in &runs {
            let label = truth.cgroups.attributed().path.to_string();
            let expected = truth.expected_tracepoint_total();
            match counts.get(&label) {
                Some(&got) if got == expected as f64 => fitted += 1,
                Some(&got) => wrong.push(format!("{label}: {got} != ground truth {expected}")),
                None => dropped_events += expected,
            }
        }
        println!(
            "--map.stats-entries 16: {} workload cgroups, {fitted} with an entry (all exact), {} without; \
             map_entries {entries}; map_update_errors_total{{map=\"stats\"}} +{errors} (events of cgroups without an \
             entry: {dropped_events})",
            runs.len(),
            runs.len() - fitted - wrong.len()
        );
        ensure!(wrong.is_empty(), "counts of cgroups that fit are not exact: {wrong:?}");
        // Exact: the 16 entries are ours and those of the other cgroups that got one first (other KVM users on this
        // host), each of which shows as a series of its own.
        let others =
            counts.keys().filter(|c| !runs.iter().any(|(_, t)| t.cgroups.attributed().path.to_string() == **c));
        let others = others.count();
        ensure!(fitted + others == 16, "{fitted} of our cgroups and {others} other(s) have an entry; the map holds 16");
        // Exact: some of our cgroups got no entry, and an insert into a preallocated hash map fails only when all
        // of its entries are in use, so the map is full.
        ensure!(entries == 16.0, "map_entries {entries}, expected the capacity 16 once an insert failed");
        // Other KVM users on this host may add their own dropped events, never fewer.
        ensure!(
            errors >= dropped_events as f64,
            "overflow not counted: +{errors} errors < {dropped_events} dropped events"
        );
        let (healthz, _) = agent.scraper().get("/healthz")?;
        ensure!(healthz == 200, "/healthz {healthz} after the overflow");
        Ok(())
    })();
    agent.finish(result);
}

#[test]
fn cgroup_churn_leaves_no_stale_series_or_map_entries() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 1_000;
    let args = ["--max-cgroups", "0", "--cgroups.deleted-ttl", "2s", "--map.stats-entries", "8192"];
    let agent = Agent::start_with(&env.agent_bin, &args, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    let rel = CgroupPath::parse(CGROUP_PARENT).and_then(|p| p.join(&format!("churn-{}", std::process::id()))).unwrap();
    let base = rel.under(&env.hierarchies.default.mount_point);
    let result = churn(&agent, &rel, &base, ROUNDS, PER_ROUND);
    for i in 0..PER_ROUND {
        let _ = std::fs::remove_dir(base.join(format!("c{i:04}")));
    }
    let _ = std::fs::remove_dir(&base);
    agent.finish(result);
}

fn rss(e: &Exposition) -> f64 {
    e.samples_named("process_resident_memory_bytes").map(|s| s.value).sum()
}

fn churn(agent: &Agent, rel: &CgroupPath, base: &Path, rounds: usize, per_round: usize) -> Result<()> {
    std::fs::create_dir_all(base).with_context(|| format!("mkdir {}", base.display()))?;
    let ours = format!("{}/", rel.as_str());
    let mut map: PerCpuHashMap<MapData, CgroupKey, u64> = inject::kvm_unmap_counts(agent.pid())?;
    let mut all_keys: BTreeSet<u64> = BTreeSet::new();
    let first = agent.scraper().metrics()?;
    println!(
        "churn: before: RSS {:.1} MiB, cgroups_tracked {}",
        rss(&first) / 1048576.0,
        sample_sum(&first, "mmuscope_cgroups_tracked")
    );
    for round in 0..rounds {
        let count = round as u64 + 7;
        let mut keys = Vec::with_capacity(per_round);
        for i in 0..per_round {
            let d = base.join(format!("c{i:04}"));
            std::fs::create_dir(&d).with_context(|| format!("mkdir {}", d.display()))?;
            let id = std::fs::metadata(&d)?.ino();
            keys.push((mmuscope_abi::key_flags::DEFAULT_HIERARCHY, id));
            all_keys.insert(id);
        }
        inject::set_counts(&mut map, &keys, count)?;
        let e = agent.scraper().metrics()?;
        let series: Vec<f64> = counter_by_cgroup(&e, INVALIDATIONS)
            .into_iter()
            .filter(|(c, _)| c.starts_with(&ours))
            .map(|(_, v)| v)
            .collect();
        ensure!(series.len() == per_round, "round {round}: {} of {per_round} live cgroups have series", series.len());
        ensure!(series.iter().all(|v| *v == count as f64), "round {round}: a live cgroup's count is not {count}");
        for i in 0..per_round {
            std::fs::remove_dir(base.join(format!("c{i:04}")))?;
        }
        let gone = wait_until_gone(agent, &ours)?;
        let e = agent.scraper().metrics()?;
        println!(
            "churn round {}: {per_round} cgroups created, counted ({count} each), deleted; their series gone after \
             {gone:.1} s; RSS {:.1} MiB, cgroups_tracked {}, map_entries {}",
            round + 1,
            rss(&e) / 1048576.0,
            sample_sum(&e, "mmuscope_cgroups_tracked"),
            sample(&e, "mmuscope_map_entries", ("map", "kvm_unmap_counts"))
        );
    }
    // The agent removed the map entries of every deleted cgroup (not just their series).
    let mut left = 0;
    for k in map.keys() {
        if all_keys.contains(&k.context("map key")?.cgroup_id) {
            left += 1;
        }
    }
    println!("churn: {} cgroups in total; map entries of deleted ones left: {left}", rounds * per_round);
    ensure!(left == 0, "{left} map entries of deleted cgroups remain");
    Ok(())
}

fn sample_sum(e: &Exposition, name: &str) -> f64 {
    e.samples_named(name).map(|s| s.value).sum()
}

/// Seconds until no series under `prefix` remains (deleted-ttl 2 s + rescans); an error after 30 s.
fn wait_until_gone(agent: &Agent, prefix: &str) -> Result<f64> {
    let t = Instant::now();
    loop {
        let e = agent.scraper().metrics()?;
        let left = counter_by_cgroup(&e, INVALIDATIONS).keys().filter(|c| c.starts_with(prefix)).count();
        if left == 0 {
            return Ok(t.elapsed().as_secs_f64());
        }
        ensure!(t.elapsed() < Duration::from_secs(30), "{left} series of deleted cgroups still there after 30 s");
        std::thread::sleep(Duration::from_millis(250));
    }
}
