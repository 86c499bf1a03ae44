//! Hardening, restarts (root): SIGTERM and SIGKILL while 100 clients scrape and a workload runs; once the process is
//! gone, none of the BPF programs, maps or links it held exists any more (ids taken from its own fdinfo while it
//! ran, looked up with `bpftool -j prog|map|link show` afterwards — ids, so other agents on the host never count).
//!
//! Run: `cargo test -p mmuscope-tests --test hardening_restarts -- --test-threads=1 --nocapture` (`host` tier).

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mmuscope_tests::hardening::bpf_objects::{self, Kind};
use mmuscope_tests::hardening::{kvm_madvise, wrk};
use mmuscope_tests::harness::{Agent, HostEnv};

#[test]
fn sigterm_and_sigkill_under_load_leave_no_bpf_objects_behind() {
    let Some(env) = HostEnv::require(env!("CARGO_BIN_EXE_mmuscope-workload")) else { return };
    let mut failures = Vec::new();
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        if let Err(e) = restart_case(&env, signal) {
            failures.push(format!("signal {signal}: {e:#}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn restart_case(env: &HostEnv, signal: libc::c_int) -> Result<()> {
    let name = if signal == libc::SIGKILL { "SIGKILL" } else { "SIGTERM" };
    let agent = Agent::start(&env.agent_bin, Duration::from_secs(60))?;
    let pid = agent.pid();
    let held = bpf_objects::held_by(pid)?;
    let count = |k: Kind| held.iter().filter(|(kind, _)| *kind == k).count();
    println!(
        "{name}: agent pid {pid} holds {} programs, {} maps, {} links",
        count(Kind::Prog),
        count(Kind::Map),
        count(Kind::Link)
    );
    ensure!(count(Kind::Prog) > 0 && count(Kind::Map) > 0, "no BPF objects found in /proc/{pid}/fdinfo");
    let load = wrk::Load::start(&format!("{}/metrics", agent.base_url()), 100, 4)?;
    let _run = kvm_madvise(env, "/mmuscope-hardening", &format!("restart-{}-{name}", std::process::id()), 20_000)?;
    std::thread::sleep(Duration::from_secs(1));
    let t = Instant::now();
    let mut agent = Some(agent);
    if signal == libc::SIGTERM {
        // SIGTERM and a clean exit (status 0) within the harness' timeout.
        agent.take().expect("agent").stop()?;
    } else {
        // SAFETY: kill(2) on our own unreaped child (reaped when `agent` is dropped below).
        ensure!(unsafe { libc::kill(pid as i32, signal) } == 0, "kill failed");
    }
    // The kernel frees programs and maps asynchronously after the last fd closes: poll a little.
    let left = loop {
        let left = bpf_objects::still_present(&held)?;
        if left.is_empty() || t.elapsed() > Duration::from_secs(10) {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = load.finish(); // its connections broke when the agent went away; only the agent's state matters
    println!(
        "{name}: after exit, of those still in the kernel (bpftool): {left:?} ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    drop(agent);
    ensure!(left.is_empty(), "BPF objects left behind after {name}: {left:?}");
    Ok(())
}
