//! Host test of `/api/v1/stacks` (root, /dev/kvm, this machine's kernel, tracepoint mode): kernel stacks with a
//! known call path. A kvm-madvise run of N rounds in a fresh cgroup must yield stacks through the madvise system
//! call that total exactly what its ground truth says (N `kvm_unmap_hva_range` events), all in its cgroup; a
//! capture filtered on a cgroup made beforehand (by path) must see none of them while the workload runs elsewhere,
//! and all of them when the workload runs in it. A fork-pinned run's eager fork copies give stacks through the
//! fork path that total the pages its ground truth saw copied. Also: the SVG is well-formed, and a second concurrent
//! request, a too long capture, an unknown kind and an unknown cgroup path get their 4xx. With `--stacks.disable` the
//! endpoint answers 404 and the bracket program no longer loads the capture's filter (the verifier removed it), where
//! without the flag it does. Each invalidation stack carries its event and cause (tracepoint mode: event `unknown`,
//! causes all `madvise` as the truth says), and `cause=` keeps exactly the invalidations of the causes asked for.
//!
//! Run: `cargo test -p mmuscope-tests --test stacks -- --nocapture` (as root; the agent binary must be built, see
//! `host.rs`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mmuscope_tests::cgroup::CgroupPlacement;
use mmuscope_tests::cgroup::{self, CgroupPath};
use mmuscope_tests::hardening::bpf_objects;
use mmuscope_tests::harness::{Agent, CgroupGuard, HostEnv, Scraper, run_workload_command};
use mmuscope_tests::truth::GroundTruth;
use serde_json::Value;

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const CGROUP_PARENT: &str = "/mmuscope-test";
/// Capture length: long enough for the workload to start after the capture is armed and to finish before it ends.
const SECONDS: u64 = 8;
/// Time given to the request to arm the capture before the workload starts.
const ARM_DELAY: Duration = Duration::from_millis(1500);
const ROUNDS: u64 = 400;

#[test]
fn madvise_stacks_total_the_workloads_rounds() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    let agent = Agent::start(&env.agent_bin, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
    println!("agent pid {} ready at {}", agent.pid(), agent.base_url());
    let result = run_all(&env, &agent);
    agent.finish(result);
}

/// The program that counts (and captures) KVM's invalidations in tracepoint mode, and the capture filter's map.
const BRACKET_PROGRAM: &str = "kvm_unmap_tp_btf";
const FILTER_MAP: &str = ".data.stacks";

#[test]
fn disabled_capture_leaves_the_programs() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else {
        return;
    };
    for disable in [false, true] {
        let extra: &[&str] = if disable { &["--stacks.disable"] } else { &[] };
        let agent = Agent::start_with(&env.agent_bin, extra, READY_TIMEOUT).unwrap_or_else(|e| panic!("{e:#}"));
        let result = capture_switch(&agent, disable);
        agent.finish(result);
    }
}

fn capture_switch(agent: &Agent, disabled: bool) -> Result<()> {
    let maps = bpf_objects::maps_loaded_by(agent.pid(), BRACKET_PROGRAM)?;
    println!("disabled={disabled}: {BRACKET_PROGRAM} loads the values of {maps:?}");
    ensure!(
        maps.contains(FILTER_MAP) != disabled,
        "{BRACKET_PROGRAM} {} {FILTER_MAP} with the capture {}",
        if disabled { "still loads" } else { "does not load" },
        if disabled { "disabled" } else { "on" }
    );
    let (status, body) = agent.scraper().get("/api/v1/stacks?seconds=1")?;
    println!("disabled={disabled}: /api/v1/stacks?seconds=1: {status} {}", body.lines().next().unwrap_or_default());
    if disabled {
        ensure!(
            status == 404 && body.contains("--stacks.disable"),
            "HTTP {status} {body}, expected a 404 naming the flag"
        );
    } else {
        ensure!(status == 200, "HTTP {status} {body}");
    }
    Ok(())
}

fn run_all(env: &HostEnv, agent: &Agent) -> Result<()> {
    let scraper = Scraper::with_timeout(&agent.base_url(), Duration::from_secs(SECONDS + 30));
    unfiltered(env, &scraper)?;
    by_cause(env, &scraper)?;
    // A cgroup that exists before the capture, so that the capture can be filtered on it.
    let rel = CgroupPath::parse(CGROUP_PARENT)?.join(&format!("stacks-h{}-target", std::process::id()))?;
    let _guard = CgroupGuard::new(env.hierarchies.clone(), rel.clone());
    let target = cgroup::create(&env.hierarchies, &rel)?;
    let cg = target.attributed();
    println!("target cgroup {} (id {}) made before the captures", cg.path, cg.id);
    thread::sleep(Duration::from_millis(500)); // the agent learns it from tp_btf/cgroup_mkdir
    filtered_elsewhere(env, &scraper, &target)?;
    filtered_here(env, &scraper, &target)?;
    fork_copies(env, &scraper)?;
    svg_and_errors(&scraper)
}

/// Madvise events the truth expects: its sources whose context cause is the madvise system call, once per VM.
fn expected_madvise(truth: &GroundTruth) -> u64 {
    truth
        .invalidations
        .sources
        .iter()
        .filter(|s| s.context_cause.as_deref() == Some("madvise") && s.initiator_pid.is_none())
        .map(|s| s.count * u64::from(s.vms))
        .sum()
}

/// Whether a frame list (innermost first) passes through the madvise system call (`__x64_sys_madvise` on x86-64,
/// `__arm64_sys_madvise` on arm64; not `process_madvise`).
fn through_madvise(frames: &[Value]) -> bool {
    frames.iter().any(|f| f.as_str().is_some_and(|f| f.ends_with("_sys_madvise")))
}

/// Runs `request` (a path of the API) in a thread, the workload `args` meanwhile, and returns both.
fn capture_during(env: &HostEnv, scraper: &Scraper, request: &str, args: &[&str]) -> Result<(String, GroundTruth)> {
    let mut cmd = Command::new(&env.workload_bin);
    cmd.args(args);
    capture_during_command(scraper, request, cmd)
}

/// [`capture_during`] with the workload's command made by the caller.
fn capture_during_command(scraper: &Scraper, request: &str, cmd: Command) -> Result<(String, GroundTruth)> {
    let (path, base) = (request.to_string(), scraper.base().to_string());
    let started = Instant::now();
    let handle = thread::spawn(move || Scraper::with_timeout(&base, Duration::from_secs(SECONDS + 30)).get(&path));
    thread::sleep(ARM_DELAY);
    let truth = run_workload_command(cmd)?;
    let took = started.elapsed();
    ensure!(
        took + Duration::from_millis(500) < Duration::from_secs(SECONDS),
        "the workload ended {took:?} after the request started, too close to the {SECONDS} s capture"
    );
    let (status, body) = handle.join().map_err(|_| anyhow::anyhow!("request thread panicked"))??;
    ensure!(status == 200, "GET {request}: HTTP {status}: {body}");
    Ok((body, truth))
}

/// Sums of the JSON stacks per cgroup: (all events, events through madvise).
fn per_cgroup(view: &Value) -> Result<BTreeMap<u64, (String, u64, u64)>> {
    let mut out: BTreeMap<u64, (String, u64, u64)> = BTreeMap::new();
    for s in view["stacks"].as_array().context("no stacks array")? {
        let id = s["cgroup_id"].as_u64().context("cgroup_id")?;
        let count = s["count"].as_u64().context("count")?;
        let frames = s["frames"].as_array().context("frames")?;
        let e = out.entry(id).or_insert_with(|| (s["cgroup"].as_str().unwrap_or("").to_string(), 0, 0));
        e.1 += count;
        if through_madvise(frames) {
            e.2 += count;
        }
    }
    Ok(out)
}

fn print_top(view: &Value, n: usize) {
    for s in view["stacks"].as_array().into_iter().flatten().take(n) {
        let frames: Vec<&str> = s["frames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let folded: Vec<&str> = frames.iter().rev().copied().collect();
        println!("  {} {} {}", s["cgroup"].as_str().unwrap_or(""), folded.join(";"), s["count"]);
    }
}

/// No filter: the workload's madvise stacks total its truth, in its cgroup; no other cgroup has any.
fn unfiltered(env: &HostEnv, scraper: &Scraper) -> Result<()> {
    let name = format!("stacks-h{}-all", std::process::id());
    let _guard = CgroupGuard::new(env.hierarchies.clone(), CgroupPath::parse(CGROUP_PARENT)?.join(&name)?);
    let rounds = ROUNDS.to_string();
    let args = ["kvm-madvise", "--iterations", &rounds, "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name];
    let request = format!("/api/v1/stacks?seconds={SECONDS}&kind=invalidation&format=json");
    let (body, truth) = capture_during(env, scraper, &request, &args)?;
    let view: Value = serde_json::from_str(&body).context("JSON of /api/v1/stacks")?;
    let cg = truth.cgroups.attributed();
    let expected = expected_madvise(&truth);
    ensure!(expected == ROUNDS * u64::from(truth.vms), "truth expects {expected} madvise events for {ROUNDS} rounds");
    println!(
        "unfiltered: workload cgroup {} (id {}), truth: {expected} madvise events, {} kvm_unmap_hva_range in all",
        cg.path,
        cg.id,
        truth.expected_tracepoint_total()
    );
    print_top(&view, 5);
    println!("  lost {}, note {:?}", view["lost"], view["note"]);
    let sums = per_cgroup(&view)?;
    let (_, total, madvise) = sums.get(&cg.id).cloned().unwrap_or_default();
    println!("  workload cgroup: {madvise} events through madvise, {total} in all");
    ensure!(view["lost"] == 0, "stacks lost: {}", view["lost"]);
    ensure!(madvise == expected, "stacks through madvise in {}: {madvise}, truth says {expected}", cg.path);
    ensure!(
        total == truth.expected_tracepoint_total(),
        "stacks in {}: {total}, truth says {} kvm_unmap_hva_range events",
        cg.path,
        truth.expected_tracepoint_total()
    );
    let others: Vec<_> = sums.iter().filter(|(id, _)| **id != cg.id).collect();
    for (id, (path, total, madvise)) in &others {
        println!("  other cgroup {path} (id {id}): {total} events, {madvise} through madvise");
    }
    ensure!(
        others.is_empty(),
        "{} other cgroup(s) had invalidation stacks during the capture (see above); is something else on this host \
         using KVM?",
        others.len()
    );
    // Each stack carries the event and cause of its invalidations: tracepoint mode knows no event; the causes are the
    // truth's.
    let mut by_cause: BTreeMap<String, u64> = BTreeMap::new();
    for st in view["stacks"].as_array().into_iter().flatten().filter(|st| st["cgroup_id"] == cg.id) {
        ensure!(st["event"] == "unknown", "an invalidation stack with event {} in tracepoint mode", st["event"]);
        *by_cause.entry(st["cause"].as_str().unwrap_or("none").to_string()).or_default() +=
            st["count"].as_u64().unwrap_or(0);
    }
    println!("  by cause: {by_cause:?} (truth: madvise {expected})");
    ensure!(
        by_cause == BTreeMap::from([("madvise".to_string(), expected)]),
        "stacks by cause {by_cause:?}, truth madvise {expected}"
    );
    Ok(())
}

/// `cause=` keeps only the invalidations of those causes: the madvise workload's are all `madvise`, so a capture of
/// `munmap` ones during it has none of them, and one of `madvise` has them all.
fn by_cause(env: &HostEnv, scraper: &Scraper) -> Result<()> {
    for (cause, all) in [("munmap", false), ("madvise", true)] {
        let name = format!("stacks-h{}-cause-{cause}", std::process::id());
        let _guard = CgroupGuard::new(env.hierarchies.clone(), CgroupPath::parse(CGROUP_PARENT)?.join(&name)?);
        let rounds = ROUNDS.to_string();
        let args = ["kvm-madvise", "--iterations", &rounds, "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name];
        let request =
            format!("/api/v1/stacks?seconds={SECONDS}&kind=invalidation&event=unknown&cause={cause}&format=json");
        let (body, truth) = capture_during(env, scraper, &request, &args)?;
        let view: Value = serde_json::from_str(&body).context("JSON of /api/v1/stacks")?;
        let cg = truth.cgroups.attributed();
        let (_, total, _) = per_cgroup(&view)?.get(&cg.id).cloned().unwrap_or_default();
        let expected = if all { expected_madvise(&truth) } else { 0 };
        println!("cause={cause}: {total} stacks' events in {} (truth {expected})", cg.path);
        ensure!(total == expected, "cause={cause}: {total} events in {}, truth {expected}", cg.path);
    }
    Ok(())
}

/// Filtered on the target cgroup (by path) while the workload runs in another: none of its events.
fn filtered_elsewhere(env: &HostEnv, scraper: &Scraper, target: &CgroupPlacement) -> Result<()> {
    let name = format!("stacks-h{}-other", std::process::id());
    let _guard = CgroupGuard::new(env.hierarchies.clone(), CgroupPath::parse(CGROUP_PARENT)?.join(&name)?);
    let rounds = ROUNDS.to_string();
    let args = ["kvm-madvise", "--iterations", &rounds, "--cgroup-parent", CGROUP_PARENT, "--cgroup-name", &name];
    let t = target.attributed();
    let request = format!("/api/v1/stacks?seconds={SECONDS}&cgroup={}&format=json", t.path);
    let (body, truth) = capture_during(env, scraper, &request, &args)?;
    let view: Value = serde_json::from_str(&body)?;
    let sums = per_cgroup(&view)?;
    let w = truth.cgroups.attributed();
    println!("filtered on {} (id {}), workload in {} (id {}): stacks {sums:?}", t.path, t.id, w.path, w.id);
    ensure!(view["cgroup_id"] == t.id, "the response names filter {}, not {}", view["cgroup_id"], t.id);
    ensure!(sums.is_empty(), "a capture filtered on cgroup {} returned stacks of {sums:?}", t.id);
    Ok(())
}

/// Filtered on the target cgroup with the workload in it: all of its madvise events, folded.
fn filtered_here(env: &HostEnv, scraper: &Scraper, target: &CgroupPlacement) -> Result<()> {
    let rounds = ROUNDS.to_string();
    let mut cmd = Command::new(&env.workload_bin);
    cmd.args(["kvm-madvise", "--iterations", &rounds, "--cgroup-current"]);
    let procs: Vec<CString> = [Some(&target.default), target.memory_v1.as_ref()]
        .into_iter()
        .flatten()
        .map(|c| CString::new(c.dir.join("cgroup.procs").into_os_string().into_encoded_bytes()))
        .collect::<Result<_, _>>()?;
    // SAFETY: only open/write/close between fork and exec (async-signal-safe); "0" moves the writer itself.
    unsafe {
        cmd.pre_exec(move || {
            for p in &procs {
                let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 || libc::write(fd, b"0\n".as_ptr().cast(), 2) != 2 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let t = target.attributed();
    let request = format!("/api/v1/stacks?seconds={SECONDS}&cgroup={}&format=folded", t.id);
    let (body, truth) = capture_during_command(scraper, &request, cmd)?;
    ensure!(truth.cgroups.attributed().id == t.id, "the workload did not run in the target cgroup");
    let expected = expected_madvise(&truth);
    let (mut madvise, mut total) = (0, 0);
    println!("filtered on {} (id {}), workload in it; folded:", t.path, t.id);
    for line in body.lines() {
        let (stack, n) = line.rsplit_once(' ').context("folded line without a count")?;
        let n: u64 = n.parse().with_context(|| format!("count of {line:?}"))?;
        println!("  {line}");
        ensure!(stack.starts_with(&format!("{};", t.path)), "a stack of another cgroup: {line}");
        total += n;
        if stack.split(';').any(|f| f.ends_with("_sys_madvise")) {
            madvise += n;
        }
    }
    let all = truth.expected_tracepoint_total();
    println!("  {madvise} through madvise (truth {expected}), {total} in all (truth {all})");
    ensure!(madvise == expected, "folded stacks through madvise: {madvise}, truth says {expected}");
    ensure!(total == all, "folded stacks: {total}, truth says {all}");
    Ok(())
}

/// Eager copies of pinned pages at fork: stacks of kind `fork_copy` in the workload's cgroup, through the clone
/// system call and `copy_process`, total the pages whose PFN differs between parent and child.
fn fork_copies(env: &HostEnv, scraper: &Scraper) -> Result<()> {
    let name = format!("stacks-h{}-fork", std::process::id());
    let _guard = CgroupGuard::new(env.hierarchies.clone(), CgroupPath::parse(CGROUP_PARENT)?.join(&name)?);
    // The workload forks once the agent has attached its fork-copy hook (it does when it sees the pin).
    let base = scraper.base().to_owned();
    let args = [
        "fork-pinned",
        "--pages",
        "64",
        "--cgroup-parent",
        CGROUP_PARENT,
        "--cgroup-name",
        &name,
        "--agent-url",
        &base,
    ];
    let request = format!("/api/v1/stacks?seconds={SECONDS}&kind=fork_copy&format=json");
    let (body, truth) = capture_during(env, scraper, &request, &args)?;
    let view: Value = serde_json::from_str(&body)?;
    let fork = truth.fork.as_ref().context("fork-pinned truth without a fork part")?;
    let cg = truth.cgroups.attributed();
    ensure!(fork.copied_pages > 0, "the workload saw no eager copy: {fork:?}");
    println!("fork copies: workload cgroup {} (id {}), truth: {} pages copied", cg.path, cg.id, fork.copied_pages);
    print_top(&view, 3);
    let (mut total, mut through_fork) = (0, 0);
    for s in view["stacks"].as_array().context("stacks")? {
        if s["cgroup_id"] != cg.id {
            continue;
        }
        let n = s["count"].as_u64().context("count")?;
        let frames: Vec<&str> = s["frames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        total += n;
        if frames.contains(&"copy_process")
            && frames.iter().any(|f| f.ends_with("_sys_clone") || f.ends_with("_sys_clone3"))
        {
            through_fork += n;
        }
    }
    println!("  {through_fork} through clone and copy_process, {total} in all, lost {}", view["lost"]);
    ensure!(view["lost"] == 0, "stacks lost: {}", view["lost"]);
    ensure!(
        through_fork == fork.copied_pages,
        "fork-copy stacks through the fork path: {through_fork}, truth says {}",
        fork.copied_pages
    );
    ensure!(total == fork.copied_pages, "fork-copy stacks: {total}, truth says {}", fork.copied_pages);
    Ok(())
}

fn svg_and_errors(scraper: &Scraper) -> Result<()> {
    let (status, body) = scraper.get("/api/v1/stacks?seconds=1&format=svg")?;
    ensure!(status == 200, "svg: HTTP {status}");
    let body = body.trim();
    ensure!(body.starts_with("<?xml") && body.ends_with("</svg>"), "not an SVG document: {:.200}", body);
    println!("svg: {} bytes, well-formed ends", body.len());
    // A second request while one runs: 429.
    let base = scraper.base().to_string();
    let running = thread::spawn(move || Scraper::new(&base).get("/api/v1/stacks?seconds=3"));
    thread::sleep(ARM_DELAY);
    let cases: [(&str, u16); 7] = [
        ("/api/v1/stacks?seconds=1", 429),
        ("/api/v1/stacks?seconds=61", 400),
        ("/api/v1/stacks?kind=bogus", 400),
        ("/api/v1/stacks?kind=invalidation&cause=bogus", 400),
        ("/api/v1/stacks?kind=all&event=clear", 400),
        ("/api/v1/stacks?cgroup=/no/such/cgroup", 404),
        ("/api/v1/stacks?format=png", 400),
    ];
    for (path, want) in cases {
        let (status, body) = scraper.get(path)?;
        println!("{path}: {status} {}", body.trim());
        let err: Value = serde_json::from_str(&body).with_context(|| format!("{path}: not JSON: {body}"))?;
        if status != want || !err["error"].is_string() {
            bail!("{path}: HTTP {status} {body}, expected {want} with a JSON error");
        }
    }
    let (status, _) = running.join().map_err(|_| anyhow::anyhow!("request thread panicked"))??;
    ensure!(status == 200, "the running request ended with HTTP {status}");
    Ok(())
}
