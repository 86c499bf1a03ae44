//! The systemd unit: what `systemd-analyze` says about it, and the agent run the way the unit runs it.
//!
//! There is no systemd as PID 1 on the test machines, so the runtime check reproduces the unit's execution
//! environment with util-linux `setpriv`: an unprivileged uid, exactly the unit's `AmbientCapabilities=` (also as
//! the bounding set), `NoNewPrivileges=`, and a `NOTIFY_SOCKET` we listen on like systemd does for `Type=notify`.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::{fs::PermissionsExt, net::UnixDatagram},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{daemon, daemon::Daemon, http, say, seccomp};
use crate::{
    process::{self, TRACEFS},
    workspace::Workspace,
};

const UNIT: &str = "deploy/systemd/mmuscope.service";
const CONFIG: &str = "deploy/systemd/mmuscope.toml";
/// The issue's limit for `systemd-analyze security` (lower is better).
const MAX_EXPOSURE: f64 = 2.5;
/// `nobody`: any uid without privileges will do, like the unit's system user `mmuscope`.
const UNPRIVILEGED_UID: &str = "65534";

/// `systemd-analyze verify` (with ExecStart pointed at the built binary, which is not installed yet) and
/// `security --offline=true`: exposure ≤ 2.5 and every ✗ explained by a `flagged: "<item>"` comment.
pub fn analyze(ws: &Workspace, agent: &Path) -> Result<()> {
    let unit = ws.root.join(UNIT);
    let text = fs::read_to_string(&unit)?;
    let dir = ws.target_dir().join("ship/unit");
    fs::create_dir_all(&dir)?;
    let copy = dir.join("mmuscope.service");
    fs::write(&copy, text.replace("/usr/bin/mmuscope", &agent.display().to_string()))?;
    let verify = process::capture(Command::new("systemd-analyze").arg("verify").arg(&copy))?;
    let said = format!("{}{}", String::from_utf8_lossy(&verify.stdout), String::from_utf8_lossy(&verify.stderr));
    if !verify.status.success() || !said.trim().is_empty() {
        bail!("systemd-analyze verify {UNIT} ({}): {}", verify.status, said.trim());
    }
    say(format!("systemd-analyze verify {UNIT}: no findings"));
    say(requires_tracefs(&text)?);

    let out = process::capture(Command::new("systemd-analyze").args(["security", "--offline=true"]).arg(&unit))?;
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let (score, flagged) = parse_security(&report).with_context(|| format!("no exposure line in:\n{report}"))?;
    say(format!("systemd-analyze security --offline=true {UNIT}: overall exposure {score:.1} (limit {MAX_EXPOSURE})"));
    let unexplained: Vec<&String> =
        flagged.iter().filter(|item| !text.contains(&format!("flagged: \"{item}\""))).collect();
    say(format!("{} ✗ item(s), each explained in the unit: {}", flagged.len(), flagged.join(", ")));
    if score > MAX_EXPOSURE {
        bail!("exposure {score} is above {MAX_EXPOSURE}:\n{report}");
    }
    if !unexplained.is_empty() {
        bail!("✗ items without a `flagged: \"<item>\"` comment in {UNIT}: {unexplained:?}");
    }
    Ok(())
}

/// The unit must order itself after the mount of tracefs and require it (`RequiresMountsFor=` a path at or below
/// [`TRACEFS`]), and systemd must have the mount unit that does it, `sys-kernel-tracing.mount`, in one of the
/// directories `systemd-analyze unit-paths` lists.
fn requires_tracefs(unit: &str) -> Result<String> {
    let paths: Vec<&str> =
        unit.lines().filter_map(|l| l.strip_prefix("RequiresMountsFor=")).flat_map(str::split_whitespace).collect();
    if !paths.iter().any(|p| Path::new(p).starts_with(TRACEFS)) {
        bail!(
            "{UNIT} has no RequiresMountsFor={TRACEFS}: on a host without tracefs the tracepoint families do not attach"
        );
    }
    let out = process::capture(Command::new("systemd-analyze").arg("unit-paths"))?;
    let dirs = String::from_utf8_lossy(&out.stdout).to_string();
    let mount_unit = dirs
        .lines()
        .map(|d| Path::new(d.trim()).join("sys-kernel-tracing.mount"))
        .find(|p| p.exists())
        .with_context(|| format!("no sys-kernel-tracing.mount in systemd's unit paths:\n{dirs}"))?;
    let verify = process::capture(Command::new("systemd-analyze").arg("verify").arg(&mount_unit))?;
    if !verify.status.success() {
        bail!(
            "systemd-analyze verify {} ({}): {}",
            mount_unit.display(),
            verify.status,
            String::from_utf8_lossy(&verify.stderr)
        );
    }
    Ok(format!("RequiresMountsFor={TRACEFS}: systemd mounts tracefs first with {} (verified)", mount_unit.display()))
}

/// The overall exposure and the names of the ✗ items of a `systemd-analyze security` report.
pub(in crate::tiers) fn parse_security(report: &str) -> Option<(f64, Vec<String>)> {
    let score = report.lines().find_map(|l| l.split_once("Overall exposure level for ")?.1.split(": ").nth(1))?;
    let score = score.split_whitespace().next()?.parse().ok()?;
    let flagged = report
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("✗ "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    Some((score, flagged))
}

/// The capabilities of the unit's `AmbientCapabilities=` as setpriv wants them: `+bpf,+perfmon,…`.
fn ambient_caps(unit: &str) -> Result<String> {
    let line = unit.lines().find_map(|l| l.strip_prefix("AmbientCapabilities=")).context("no AmbientCapabilities=")?;
    let caps: Vec<String> =
        line.split_whitespace().map(|c| format!("+{}", c.trim_start_matches("CAP_").to_ascii_lowercase())).collect();
    Ok(caps.join(","))
}

/// Starts the agent as the unit would, waits for READY=1, then requires every thread to hold no capability and
/// the agent to serve; stops it with SIGTERM (exit 0). Then checks the unit's system call filter ([`seccomp`]).
pub fn runtime(ws: &Workspace, agent: &Path) -> Result<()> {
    let unit = fs::read_to_string(ws.root.join(UNIT))?;
    let caps = ambient_caps(&unit)?;
    let dir = ws.target_dir().join("ship/notify");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    // The agent runs as another uid and must be able to send to our socket.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))?;
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).context("binding the notify socket")?;
    fs::set_permissions(&socket_path, fs::Permissions::from_mode(0o666))?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;

    let addr = daemon::free_port()?;
    let config = ws.root.join(CONFIG);
    let mut cmd = unit_like(agent, &caps, &config, addr);
    cmd.env("NOTIFY_SOCKET", &socket_path);
    let mut running = Daemon::spawn("agent (unit privileges)", &mut cmd, &dir.join("agent.log"))?;

    let start = Instant::now();
    let mut messages = String::new();
    let mut buf = [0u8; 4096];
    while !messages.lines().any(|l| l == "READY=1") {
        running.alive()?;
        if start.elapsed() > Duration::from_secs(60) {
            bail!("no READY=1 within 60 s (got {messages:?}); agent log:\n{}", running.tail());
        }
        if let Ok(n) = socket.recv(&mut buf) {
            messages.push_str(&String::from_utf8_lossy(&buf[..n]));
            messages.push('\n');
        }
    }
    let status = messages.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or("(none)");
    say(format!(
        "READY=1 after {:.1} s as uid {UNPRIVILEGED_UID} with {caps}; STATUS={status}",
        start.elapsed().as_secs_f64()
    ));
    let threads = daemon::require_no_capabilities(running.pid())?;
    say(format!("after READY=1: CapInh, CapPrm, CapEff and CapAmb are 0 on all {threads} threads of the agent"));
    http::get_ok(&format!("http://{addr}/readyz"))?;
    let metrics = http::get_ok(&format!("http://{addr}/metrics"))?;
    // Exactly the families that `mmuscope check` plans under the same privileges are attached: a family the unit's
    // privileges cost at attach time (or one attached that the plan left out) fails, not only "no probe at all".
    let planned = planned_families(agent, &caps)?;
    let attached = attached_families(&metrics);
    same_families(&planned, &attached).with_context(|| format!("agent log:\n{}", running.tail()))?;
    say(format!(
        "without capabilities it still serves: /readyz 200, /metrics with the {} families `check` plans under the \
         unit's privileges attached: {}",
        attached.len(),
        attached.iter().cloned().collect::<Vec<_>>().join(", ")
    ));
    running.stop()?;

    let addr = daemon::free_port()?;
    seccomp::check(&unit, unit_like(agent, &caps, &config, addr), addr, agent, &dir)
}

/// What the unit gives its command: `setpriv` gives it an unprivileged uid, exactly the unit's ambient
/// capabilities (also as the bounding set) and no_new_privs, like User=, AmbientCapabilities=,
/// CapabilityBoundingSet= and NoNewPrivileges= do. Before that, what the unit's `RequiresMountsFor=` makes systemd
/// do: mount tracefs where it is not mounted ([`process::with_tracefs`]). The command follows.
fn unit_privileges(caps: &str) -> Command {
    let mut cmd = process::with_tracefs("setpriv");
    cmd.args(["--reuid", UNPRIVILEGED_UID, "--regid", UNPRIVILEGED_UID, "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg("--no-new-privs")
        .arg("--");
    cmd
}

/// The agent as the unit starts it ([`unit_privileges`]).
fn unit_like(agent: &Path, caps: &str, config: &Path, addr: std::net::SocketAddr) -> Command {
    let mut cmd = unit_privileges(caps);
    cmd.arg(agent)
        .arg("run")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={addr}"));
    cmd
}

/// The families `mmuscope check --json` attaches in its plan, run with the unit's privileges. The unit's config
/// file sets no probe option (no mode, no deny), so check's defaults plan what the unit's agent plans.
fn planned_families(agent: &Path, caps: &str) -> Result<BTreeSet<String>> {
    let mut cmd = unit_privileges(caps);
    cmd.arg(agent).args(["check", "--json"]);
    let out = process::capture(&mut cmd)?;
    if !out.status.success() {
        bail!(
            "mmuscope check --json with the unit's privileges ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    planned_in(&String::from_utf8_lossy(&out.stdout))
}

/// Families with an alternative whose status is `attached` in a `check --json` document.
fn planned_in(json: &str) -> Result<BTreeSet<String>> {
    let v: serde_json::Value = serde_json::from_str(json).context("mmuscope check --json output")?;
    let families = v["families"].as_array().context("no families list in check --json")?;
    let mut planned = BTreeSet::new();
    for f in families {
        let alternatives = f["alternatives"].as_array().context("a family without alternatives in check --json")?;
        if alternatives.iter().any(|a| a["status"] == "attached") {
            planned.insert(f["name"].as_str().context("a family without a name in check --json")?.to_string());
        }
    }
    Ok(planned)
}

/// Families (`probe` label) whose `mmuscope_probe_attached` series sum to more than 0 in an exposition.
fn attached_families(metrics: &str) -> BTreeSet<String> {
    let mut sums: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for line in metrics.lines().filter(|l| l.starts_with("mmuscope_probe_attached{")) {
        let Some(family) = line.split_once("probe=\"").and_then(|(_, rest)| rest.split_once('"')).map(|(f, _)| f)
        else {
            continue;
        };
        let value = line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or(0.0);
        *sums.entry(family.to_string()).or_default() += value;
    }
    sums.into_iter().filter(|(_, v)| *v > 0.0).map(|(f, _)| f).collect()
}

/// The families attached must be exactly the planned ones, and there must be some.
fn same_families(planned: &BTreeSet<String>, attached: &BTreeSet<String>) -> Result<()> {
    if planned.is_empty() {
        bail!("mmuscope check plans no family under the unit's privileges");
    }
    if planned != attached {
        let missing: Vec<&String> = planned.difference(attached).collect();
        let extra: Vec<&String> = attached.difference(planned).collect();
        bail!(
            "under the unit's privileges the agent attached {attached:?}, check planned {planned:?}: \
             missing {missing:?}, not planned {extra:?}"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attached_families_must_be_the_planned_ones() {
        let check = r#"{"families":[
            {"name":"brackets","alternatives":[{"name":"fentry","status":"attached"},{"name":"kprobe","status":"skipped"}]},
            {"name":"fork_copies","alternatives":[{"name":"tp_btf","status":"attached"}]},
            {"name":"subscribers","alternatives":[{"name":"fentry","status":"unavailable","reason":"x"}]}]}"#;
        let planned = planned_in(check).unwrap();
        assert_eq!(planned.iter().map(String::as_str).collect::<Vec<_>>(), ["brackets", "fork_copies"]);
        let metrics = "# TYPE mmuscope_probe_attached gauge\n\
            mmuscope_probe_attached{probe=\"brackets\",mode=\"fentry\",target=\"a\"} 1\n\
            mmuscope_probe_attached{probe=\"brackets\",mode=\"fentry\",target=\"b\"} 1\n\
            mmuscope_probe_attached{probe=\"fork_copies\",mode=\"tp_btf\",target=\"c\"} 1\n\
            mmuscope_probe_attached{probe=\"subscribers\",mode=\"fentry\",target=\"d\"} 0\n";
        let attached = attached_families(metrics);
        same_families(&planned, &attached).unwrap();
        // One family lost at attach time (as a missing capability would do) fails, although probes are attached.
        let lost = metrics.replace("target=\"c\"} 1", "target=\"c\"} 0");
        let e = same_families(&planned, &attached_families(&lost)).unwrap_err().to_string();
        assert!(e.contains("missing [\"fork_copies\"]"), "{e}");
        // One attached that the plan left out fails too, and so does an empty plan.
        let more = metrics.replace("target=\"d\"} 0", "target=\"d\"} 1");
        assert!(same_families(&planned, &attached_families(&more)).is_err());
        assert!(same_families(&BTreeSet::new(), &BTreeSet::new()).is_err());
    }

    #[test]
    fn reads_score_and_flagged_items() {
        let report = "  NAME   DESCRIPTION   EXPOSURE\n\
                      ✗ RootDirectory=/RootImage=   Service runs within the host's root directory   0.1\n\
                      ✓ User=/DynamicUser=   Service runs under a transient non-root user identity\n\
                      ✗ CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)   Service may override   0.2\n\
                      \n→ Overall exposure level for mmuscope.service: 1.8 OK 🙂\n";
        let (score, flagged) = parse_security(report).unwrap();
        assert_eq!(score, 1.8);
        assert_eq!(flagged, ["RootDirectory=/RootImage=", "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)"]);
    }

    #[test]
    fn ambient_capabilities_become_setpriv_arguments() {
        let unit = "[Service]\nAmbientCapabilities=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH\n";
        assert_eq!(ambient_caps(unit).unwrap(), "+bpf,+perfmon,+dac_read_search");
    }
}
