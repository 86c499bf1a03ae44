//! The unit's `SystemCallFilter=` against the system calls the agent really makes.
//!
//! Without systemd as PID 1 the filter cannot be applied here, and with `SystemCallErrorNumber=EPERM` a call it
//! forgets would not crash the agent but quietly fail (a probe family that does not attach). So the agent runs
//! under strace with the unit's privileges (see `systemd`), serves a few requests and stops; every call it made
//! after its execve must be in the set the unit's filter lines allow, as `systemd-analyze syscall-filter` expands
//! their groups.

use std::{
    collections::{BTreeSet, HashMap},
    fs,
    path::Path,
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::{daemon, daemon::Daemon, http, say};
use crate::process;

/// Runs `unit_command` (the agent under the unit's privileges, listening on `addr`) under strace and checks its
/// system calls against the filter lines of `unit`.
pub fn check(unit: &str, unit_command: Command, addr: std::net::SocketAddr, agent: &Path, dir: &Path) -> Result<()> {
    let allowed = allowed(unit)?;
    let log = dir.join("strace.log");
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-o"]).arg(&log).arg("--").arg(unit_command.get_program()).args(unit_command.get_args());
    for (k, v) in unit_command.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut traced = Daemon::spawn("agent under strace", &mut cmd, &dir.join("strace-agent.log"))?;
    daemon::wait_for("traced agent /readyz", Duration::from_secs(120), || {
        traced.alive()?;
        Ok(http::get(&format!("http://{addr}/readyz"), &[]).ok().filter(|(c, _)| *c == 200))
    })?;
    for path in ["/metrics", "/api/v1/status", "/api/v1/cgroups", "/api/v1/probes", "/"] {
        http::get_ok(&format!("http://{addr}{path}"))?;
    }
    // SIGTERM to the agent itself (strace would detach and leave it running); strace then exits with its status.
    let agent_pid = traced.grandchild().context("the traced agent's pid")?;
    traced.stop_by_signalling(agent_pid)?;
    let text = fs::read_to_string(&log)?;
    let used =
        used_after_exec(&text, &agent.display().to_string()).context("no execve of the agent in strace's log")?;
    let denied: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    say(format!(
        "the agent made {} distinct system calls; SystemCallFilter= allows {} names",
        used.len(),
        allowed.len()
    ));
    if !denied.is_empty() {
        bail!("SystemCallFilter= in the unit would refuse (EPERM) calls the agent makes: {denied:?}");
    }
    say("every one of them passes the unit's SystemCallFilter=");
    Ok(())
}

/// The system calls the unit's `SystemCallFilter=` lines allow (allow-list mode: the first line allows, `~` lines
/// take away, in order, as systemd merges them).
fn allowed(unit: &str) -> Result<BTreeSet<String>> {
    let mut groups = HashMap::new();
    let mut allowed = BTreeSet::new();
    let lines: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")).collect();
    if lines.first().is_none_or(|l| l.starts_with('~')) {
        bail!("the unit's first SystemCallFilter= line must be an allow list");
    }
    for line in lines {
        let (deny, items) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        for item in items.split_whitespace() {
            for name in expand(item, &mut groups)? {
                if deny {
                    allowed.remove(&name);
                } else {
                    allowed.insert(name);
                }
            }
        }
    }
    Ok(allowed)
}

/// A syscall name, or the calls of a `@group` (recursively), from `systemd-analyze syscall-filter`.
fn expand(item: &str, cache: &mut HashMap<String, BTreeSet<String>>) -> Result<BTreeSet<String>> {
    if !item.starts_with('@') {
        return Ok(BTreeSet::from([item.to_string()]));
    }
    if let Some(set) = cache.get(item) {
        return Ok(set.clone());
    }
    let out = process::capture(Command::new("systemd-analyze").args(["syscall-filter", item]))?;
    if !out.status.success() {
        bail!("systemd-analyze syscall-filter {item}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut set = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1).map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        set.extend(expand(line, cache)?);
    }
    cache.insert(item.to_string(), set.clone());
    Ok(set)
}

/// Names of the calls in an `strace -f` log made after the agent's execve (setpriv's own calls before it stand
/// for what systemd does before it applies the filter).
fn used_after_exec(log: &str, agent: &str) -> Option<BTreeSet<String>> {
    let exec = format!("execve(\"{agent}\"");
    let start = log.lines().position(|l| l.contains(&exec))?;
    let names = log.lines().skip(start + 1).filter_map(|line| {
        // "<pid> name(args) = ret", "<pid> <... name resumed>…", "<pid> +++ exited …", "<pid> --- SIGTERM …".
        let rest = line.split_once(' ')?.1.trim_start();
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        (!name.is_empty()).then_some(name)
    });
    Some(names.collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_after_the_agents_execve() {
        let log = "10 execve(\"/usr/bin/setpriv\", [...]) = 0\n\
                   10 setresuid(65534, 65534, 65534) = 0\n\
                   10 execve(\"/x/mmuscope\", [\"mmuscope\"]) = 0\n\
                   10 bpf(BPF_PROG_LOAD, {...}, 148 <unfinished ...>\n\
                   11 perf_event_open({...}, -1, 0, -1, PERF_FLAG_FD_CLOEXEC) = 7\n\
                   10 <... bpf resumed>) = 6\n\
                   10 --- SIGTERM {si_signo=SIGTERM} ---\n\
                   10 +++ exited with 0 +++\n";
        let used: Vec<String> = used_after_exec(log, "/x/mmuscope").unwrap().into_iter().collect();
        assert_eq!(used, ["bpf", "perf_event_open"]);
    }
}
