//! Every dashboard query against a real Prometheus that scraped a real agent while workloads ran.
//!
//! The release agent runs as root on this machine (tracepoint mode here) with the shipped config file and is
//! scraped every second while `mmuscope-workload` scenarios run in fixed cgroups, for at least [`HOST_SECONDS`] and
//! until the 6.1 guest is done. At the same time two guests produce the fentry-only families ([`super::guest`]):
//! 6.1 with KVM VMs, and 6.12 with the test module's secondary-TLB subscriber; their samples are backfilled into
//! the same Prometheus afterwards. Then every panel query and every variable of the three dashboards runs over that
//! window: it must parse and return data.
//! Each query is also run restricted to this host's instance, to report which ones only the guests could answer.
//! Last, the 6.6+ kinds must show in the double-notification row from the 6.12 guest's instance alone
//! ([`POST_66_SERIES`]).

use std::{
    path::Path,
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{daemon, daemon::Daemon, dashboards, guest, http, kubepod, prometheus::Prometheus, say};
use crate::{process, workspace::Workspace};

/// The host's workloads run at least this long, and on until the 6.1 guest has exited (its boot under TCG takes a
/// varying time on a busy machine, and "now" must be a moment both have data for), but never past
/// [`HOST_SECONDS_MAX`].
const HOST_SECONDS: u64 = 45;
/// Past the guest's own QEMU timeout (300 s): by then its thread has reported, one way or the other.
const HOST_SECONDS_MAX: u64 = 420;
/// What Grafana would use for `$__rate_interval` at a 1 s scrape interval and these ranges.
const RATE_INTERVAL: &str = "10s";
const CGROUP_PARENT: &str = "/mmuscope-ship";
/// `(cgroup name, scenario and arguments; {n} is the round's size)`: one of each per round.
const SCENARIOS: &[(&str, &str)] = &[
    ("vm-madvise", "kvm-madvise --iterations {n}"),
    ("vm-munmap", "kvm-munmap --iterations {n4}"),
    ("vm-mprotect", "kvm-mprotect --iterations {n20}"),
    ("vm-multi", "multi-vm --vms 3 --iterations {n4}"),
    // The `holder` below keeps a pinned mm alive, so the agent keeps its fork-copy hook attached for these.
    ("forker", "fork-pinned --pages {n4}"),
];

/// The 6.6+ series the host dashboard's double-notification row must show from the 6.12 guest alone, each with a
/// positive rate at some moment: `(panel title, label, value)`. The 6.12 guest's scenarios make every one of them
/// (`kvm-madvise`: gather; `kvm-mprotect`: whole-mm; `mremap-move`: a range and a whole-mm call in one bracket, and
/// the overlap of the two).
const POST_66_SERIES: &[(&str, &str, &str)] = &[
    ("Secondary-TLB invalidations", "context", "bracket"),
    ("Secondary-TLB invalidations", "context", "gather"),
    ("Secondary-TLB invalidations", "scope", "full_mm"),
    ("Secondary-TLB invalidations", "scope", "range"),
    ("Double notifications by kind", "kind", "overlapping_secondary_tlb"),
];

/// One panel's queries and what Prometheus returned for each (`data` of the API answer).
pub struct PanelData {
    pub panel: Value,
    pub data: Vec<Value>,
}

pub struct DashboardData {
    pub file: &'static str,
    pub title: String,
    pub panels: Vec<PanelData>,
}

pub struct Results {
    pub start: f64,
    pub end: f64,
    pub dashboards: Vec<DashboardData>,
}

pub fn run(ws: &Workspace, agent: &Path, workload: &Path) -> Result<Results> {
    let dir = ws.target_dir().join("ship/live");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let pre_done = AtomicBool::new(false);
    let (guests, host) = thread::scope(|s| {
        let pre_done = &pre_done;
        let pre = s.spawn(move || {
            let samples = guest::run(ws, agent, workload, guest::PRE_66);
            pre_done.store(true, Ordering::Release);
            samples
        });
        let post = s.spawn(move || guest::run(ws, agent, workload, guest::POST_66));
        let host = host_phase(ws, &dir, agent, workload, pre_done);
        ([pre, post].map(|g| g.join().expect("guest thread")), host)
    });
    let (mut prometheus, host) = host?;
    let [pre, post] = guests;
    let pre = pre.context("guest (6.1, fentry, KVM) samples")?;
    let post = post.context("guest (6.12, fentry, secondary-TLB subscriber) samples")?;
    let mut files = Vec::new();
    for guest in [&pre, &post] {
        say(format!(
            "guest {}: {} dumps over {:.0} s; backfilling them with promtool; its agent: {}",
            guest.instance,
            guest.dumps,
            guest.last - guest.first,
            guest.privileges
        ));
        let openmetrics = dir.join(format!("{}.om", guest.instance.replace(':', "_")));
        std::fs::write(&openmetrics, &guest.openmetrics)?;
        files.push(openmetrics);
    }
    prometheus.restart_with(|data| {
        files.iter().try_for_each(|openmetrics| {
            process::run(
                Command::new("promtool").args(["tsdb", "create-blocks-from", "openmetrics"]).arg(openmetrics).arg(data),
            )
        })
    })?;

    let start = host.start.min(pre.first).min(post.first) - 2.0;
    let end = host.end.max(pre.last).max(post.last);
    // "Now" for instant queries: a moment the host and the 6.1 guest both have data for, rate window included. The
    // 6.12 guest starts later (it resolves its kernel through apt and builds the test module first); its series are
    // checked over the whole window (`post_66_row`).
    let now = host.end.min(pre.last);
    let overlap = now - host.start.max(pre.first);
    if overlap < 15.0 {
        bail!(
            "the host's workloads ({:.0} s from start) and the 6.1 guest's dumps ({:.0}–{:.0} s) overlapped by {overlap:.0} \
             s, less than the 15 s the instant queries need",
            host.end - host.start,
            pre.first - host.start,
            pre.last - host.start
        );
    }
    let mut results = Results { start, end, dashboards: Vec::new() };
    let (mut total, mut guest_only, mut empty) = (0, Vec::new(), Vec::new());
    for file in dashboards::FILES {
        let dash = dashboards::load(ws, file)?;
        check_variables(&prometheus, &dash, start, end).with_context(|| format!("{file}: variables"))?;
        let mut panels = Vec::new();
        for panel in dash["panels"].as_array().into_iter().flatten().filter(|p| p["type"] != "row") {
            let title = panel["title"].as_str().unwrap_or_default();
            let mut data = Vec::new();
            for target in panel["targets"].as_array().into_iter().flatten() {
                total += 1;
                let expr = target["expr"].as_str().unwrap_or_default();
                let instant = target["instant"] == true;
                let run = |instance: &str| -> Result<Value> {
                    let e = substitute(expr, instance);
                    let d =
                        if instant { prometheus.query(&e, now) } else { prometheus.query_range(&e, start, end, 1.0) };
                    d.with_context(|| format!("{file}: {title:?}: {e}"))
                };
                let all = run(".*")?;
                let what = format!("{file}: {title:?} {}", target["refId"].as_str().unwrap_or_default());
                if !has_data(&all) {
                    empty.push(what);
                } else if !has_data(&run(&host.instance)?) {
                    guest_only.push(what);
                }
                data.push(all);
            }
            panels.push(PanelData { panel: panel.clone(), data });
        }
        let title = dash["title"].as_str().unwrap_or(file).to_string();
        results.dashboards.push(DashboardData { file, title, panels });
    }
    say(format!(
        "{} of {total} dashboard queries parsed and returned data over {:.0} s ({} of them only from the guests' \
         fentry samples: {})",
        total - empty.len(),
        end - start,
        guest_only.len(),
        guest_only.join("; ")
    ));
    rules_on_live_data(&prometheus, now)?;
    if !empty.is_empty() {
        bail!("{} queries returned no data: {}", empty.len(), empty.join("; "));
    }
    post_66_row(ws, &prometheus, &post.instance, start, end)?;
    Ok(results)
}

/// The host dashboard's double-notification row, restricted to the 6.12 guest's instance, shows every series of
/// [`POST_66_SERIES`] with a positive rate.
fn post_66_row(ws: &Workspace, prometheus: &Prometheus, instance: &str, start: f64, end: f64) -> Result<()> {
    let dash = dashboards::load(ws, "mmuscope-host.json")?;
    let panels: Vec<&Value> = dash["panels"].as_array().into_iter().flatten().collect();
    let mut seen = Vec::new();
    for (title, label, value) in POST_66_SERIES {
        let panel = panels.iter().find(|p| p["title"] == *title).with_context(|| format!("no panel {title:?}"))?;
        let expr = panel["targets"][0]["expr"].as_str().with_context(|| format!("{title:?}: no query"))?;
        let data = prometheus.query_range(&substitute(expr, &regex_quote(instance)), start, end, 1.0)?;
        let positive = data["result"].as_array().into_iter().flatten().any(|series| {
            series["metric"][label] == *value
                && series["values"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|v| v[1].as_str().and_then(|x| x.parse::<f64>().ok()).is_some_and(|x| x > 0.0))
        });
        if !positive {
            bail!("{title:?} shows no {label}=\"{value}\" from the 6.6+ guest {instance}");
        }
        seen.push(format!("{label}={value}"));
    }
    say(format!("the double-notification row shows the 6.6+ series from {instance}: {}", seen.join(", ")));
    Ok(())
}

/// `s` as a literal inside a PromQL regular expression (instance names hold dots).
fn regex_quote(s: &str) -> String {
    s.chars().fold(String::new(), |mut out, c| {
        if ".+*?()[]{}|^$\\".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
        out
    })
}

/// What the host phase leaves: Prometheus (still running), this host's instance label and the workload window.
struct HostPhase {
    instance: String,
    start: f64,
    end: f64,
}

fn host_phase(
    ws: &Workspace,
    dir: &Path,
    agent: &Path,
    workload: &Path,
    pre_done: &AtomicBool,
) -> Result<(Prometheus, HostPhase)> {
    let addr = daemon::free_port()?;
    let config = ws.root.join("deploy/systemd/mmuscope.toml");
    // A workload in a Kubernetes pod too, so the namespace and pod variables have values.
    let pod = kubepod::Pod::create(&dir.join("kubepod"))?;
    let mut cmd = Command::new(agent);
    cmd.arg("run")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--kubernetes.host-root={}", pod.host_root.display()));
    // The agent dashboard's "eBPF program" panels need the run-time statistics, which are off by default.
    cmd.arg("--bpf.run-stats");
    let mut agent = Daemon::spawn("agent", &mut cmd, &dir.join("agent.log"))?;
    daemon::wait_for("agent /readyz", Duration::from_secs(60), || {
        agent.alive()?;
        Ok(http::get(&format!("http://{addr}/readyz"), &[]).ok().filter(|(c, _)| *c == 200))
    })?;
    let threads = daemon::require_no_capabilities(agent.pid())?;
    say(format!("agent started as root: after attaching, no capability on any of its {threads} threads"));

    let instance = hostname();
    let rules = ws.root.join("deploy/prometheus/mmuscope.rules.yml");
    let prometheus = Prometheus::start(&dir.join("prometheus"), addr, &instance, &rules)?;
    daemon::wait_for("first scrape", Duration::from_secs(30), || {
        Ok(prometheus.query("up{job=\"mmuscope\"} == 1", unix_now()).ok().filter(has_data))
    })?;

    let available = scenarios(workload)?;
    // Long-lived processes, as on a host running VMs and an io_uring or RDMA service: the inventory gauges
    // (notifier_subscriptions, pinned_mms) see them at every scrape, not only while a short scenario happens to run.
    let mut holders = Vec::new();
    for (name, args) in
        [("holder", "fork-pinned --pages 64 --hold"), ("kvm-holder", "multi-vm --iterations 1 --vms 1 --hold")]
    {
        let child = Command::new(workload)
            .args(args.split_whitespace())
            .args(["--cgroup-parent", CGROUP_PARENT, "--cgroup-name", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting the held workload {name}"))?;
        holders.push((name, child));
    }
    let start = unix_now();
    let started = Instant::now();
    let mut round = 0u32;
    let go_on = || {
        let elapsed = started.elapsed();
        elapsed < Duration::from_secs(HOST_SECONDS)
            || (!pre_done.load(Ordering::Acquire) && elapsed < Duration::from_secs(HOST_SECONDS_MAX))
    };
    while go_on() {
        round += 1;
        let n = 2000 * (round % 4 + 1);
        for (name, args) in &available {
            let args = args.replace("{n}", &n.to_string()).replace("{n4}", &(n / 4).to_string());
            let args = args.replace("{n20}", &(n / 20).to_string());
            let mut cmd = Command::new(workload);
            cmd.args(args.split_whitespace()).args(["--cgroup-parent", CGROUP_PARENT, "--cgroup-name", name]);
            let out = process::capture(&mut cmd)?;
            if !out.status.success() {
                bail!("{}: {}", process::describe(&cmd), String::from_utf8_lossy(&out.stderr));
            }
        }
        let mut in_pod = Command::new(workload);
        in_pod.args(["kvm-madvise", "--iterations", &(n / 4).to_string(), "--cgroup-parent", &pod.parent]);
        in_pod.args(["--cgroup-name", &pod.name]);
        let out = process::capture(&mut in_pod)?;
        if !out.status.success() {
            bail!("{}: {}", process::describe(&in_pod), String::from_utf8_lossy(&out.stderr));
        }
        // The agent names a cgroup when a scrape sees it alive; removed first, it would be "unknown".
        thread::sleep(Duration::from_millis(1500));
        for path in available.iter().map(|(name, _)| format!("{CGROUP_PARENT}/{name}")).chain([pod.cgroup()]) {
            process::capture(Command::new(workload).args(["cleanup-cgroup", "--path", &path, "--prune-parents"]))?;
        }
        agent.alive()?;
    }
    thread::sleep(Duration::from_secs(2));
    let end = unix_now();
    for (name, mut child) in holders {
        drop(child.stdin.take()); // closing stdin ends the hold
        let held = child.wait().with_context(|| format!("waiting for the held workload {name}"))?;
        if !held.success() {
            bail!("the held workload {name} failed: {held}");
        }
        let path = format!("{CGROUP_PARENT}/{name}");
        process::capture(Command::new(workload).args(["cleanup-cgroup", "--path", &path, "--prune-parents"]))?;
    }
    say(format!("host: {round} rounds of {} workload scenarios in {:.0} s", available.len(), end - start));
    agent.stop()?;
    Ok((prometheus, HostPhase { instance, start, end }))
}

/// The scenarios this workload binary offers (kvm-madvise is required; others are being added over time).
fn scenarios(workload: &Path) -> Result<Vec<(&'static str, &'static str)>> {
    let help = process::capture(Command::new(workload).arg("--help"))?;
    let help = String::from_utf8_lossy(&help.stdout);
    let offered = |args: &str| help.lines().any(|l| l.trim_start().starts_with(args.split(' ').next().unwrap_or("")));
    let (have, missing): (Vec<_>, Vec<_>) = SCENARIOS.iter().partition(|(_, args)| offered(args));
    if !missing.is_empty() {
        say(format!("workload scenarios not offered by this build, left out: {missing:?}"));
    }
    if !have.iter().any(|(name, _)| *name == "vm-madvise") {
        bail!("mmuscope-workload has no kvm-madvise scenario");
    }
    Ok(have)
}

/// Grafana's variables as a user who opens the dashboard sees them: job mmuscope, all nodes, instances, namespaces,
/// pods and cgroups.
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$job", "mmuscope")
        .replace("$instance", instance)
        .replace("$node", ".*")
        .replace("$namespace", ".*")
        .replace("$pod", ".*")
        .replace("$cgroup", ".*")
}

/// Every `label_values(selector, label)` variable offers at least one value.
fn check_variables(prometheus: &Prometheus, dash: &Value, start: f64, end: f64) -> Result<()> {
    for var in dash["templating"]["list"].as_array().into_iter().flatten().filter(|v| v["type"] == "query") {
        let query = var["query"]["query"].as_str().unwrap_or_default();
        let inner = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).context("label_values")?;
        let (selector, label) = inner.rsplit_once(',').context("label_values(selector, label)")?;
        let values = prometheus.label_values(&substitute(selector.trim(), ".*"), label.trim(), start, end)?;
        if values.is_empty() {
            bail!("variable {} ({query}) offers no value", var["name"]);
        }
    }
    Ok(())
}

/// The recording rules produce series from the live agent, and the alert rules are evaluated (shown, not judged:
/// which alert is pending depends on the machine's kernel).
fn rules_on_live_data(prometheus: &Prometheus, now: f64) -> Result<()> {
    for record in ["instance:mmuscope_invalidations:rate5m", "instance_cgroup:mmuscope_invalidations:rate5m"] {
        if !has_data(&prometheus.query(record, now)?) {
            bail!("recording rule {record} has no series although the agent was scraped");
        }
    }
    let alerts = prometheus.query("ALERTS", now)?;
    let names: Vec<String> = alerts["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| format!("{}{{{}}} {}", a["metric"]["alertname"], a["metric"]["probe"], a["metric"]["alertstate"]))
        .collect();
    say(format!("recording rules have series; alerts evaluated on the live data: {}", names.join(", ")));
    Ok(())
}

fn has_data(data: &Value) -> bool {
    data["result"].as_array().is_some_and(|r| !r.is_empty())
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "localhost".into(), |h| h.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_replaced_like_grafana_with_all_selected() {
        let e = r#"sum(rate(x_total{job=~"$job", instance=~"$instance", cgroup=~"$cgroup"}[$__rate_interval]))"#;
        assert_eq!(substitute(e, "h1"), r#"sum(rate(x_total{job=~"mmuscope", instance=~"h1", cgroup=~".*"}[10s]))"#);
    }
}
