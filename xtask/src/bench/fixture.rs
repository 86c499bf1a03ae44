//! `mmuscope-bench-fixture` (tests crate) as a background process: the floor programs, or N cgroups with counts in
//! a running agent's map.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use super::Bench;
use super::procs::Background;

pub fn floor(b: &Bench) -> Result<Background> {
    // The floor attaches classic tracepoints, like bpftrace, and cannot mount tracefs itself.
    let mut cmd = crate::process::with_tracefs(&b.bins.fixture);
    cmd.arg("floor").arg("--object").arg(&b.bins.bpf_object);
    Background::until_line(cmd, "the floor fixture", "ready", Duration::from_secs(60), true)
}

pub fn cgroups(b: &Bench, agent_pid: u32, count: usize) -> Result<Background> {
    let mut cmd = Command::new(&b.bins.fixture);
    cmd.args(["cgroups", "--agent-pid", &agent_pid.to_string(), "--count", &count.to_string()]);
    Background::until_line(cmd, "the cgroups fixture", "ready", Duration::from_secs(300), true)
}
