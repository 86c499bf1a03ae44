//! One fleet host: a booted Debian system (systemd as PID 1, a stock kernel in fentry mode) on which the project's
//! Debian package is installed, run by systemd under its unit, scraped by this machine's Prometheus through the
//! forwarded port, reloaded, restarted, stopped and purged. Every output the issue's acceptance asks for goes into
//! the [`HostReport`]; every deviation is a problem there.

use std::{
    collections::BTreeSet,
    path::Path,
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{System, exposition::sum_by, report::HostReport};
use crate::{
    tiers::ship::{daemon, http, prometheus::Prometheus, systemd::parse_security},
    vm::{
        self,
        system::{Boot, SystemGuest},
    },
    workspace::Workspace,
};

/// The agent's port (deploy/systemd/mmuscope.toml) inside the guest.
const AGENT_PORT: u16 = 9476;
/// `systemd-analyze security`'s limit, as in the ship tier.
const MAX_EXPOSURE: f64 = 2.5;
const ITERATIONS: u64 = 200;
const MEMORY_MIB: u32 = 2048;
/// One vCPU, as in the vm tier (two occasionally soft-lock under multi-threaded TCG).
const CPUS: u32 = 1;
const BOOT_LIMIT: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(60);
const LONG: Duration = Duration::from_secs(240);
/// Kernel and audit messages that mean the unit's sandbox refused the agent something.
const DENIALS: &str = r#"SIGSYS|status=31/SYS|type=1326|apparmor="DENIED"|avc: +denied"#;

/// Boots `system` and runs every check; never fails as a whole: what went wrong is in the report. `prepare` is held
/// while the kernel is fetched and the image built (the private apt state and the CPU are shared), not while the
/// guest runs.
pub fn check(
    ws: &Workspace,
    system: &System,
    data_disk: &Path,
    deb: &str,
    dir: &Path,
    prepare: &Mutex<()>,
) -> HostReport {
    let started = Instant::now();
    let mut report = HostReport { system: system.suite.to_string(), started: Some(started), ..HostReport::default() };
    if let Err(e) = run(ws, system, data_disk, deb, dir, prepare, &mut report) {
        report.problem(format!("{e:#}"));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

fn run(
    ws: &Workspace,
    system: &System,
    data_disk: &Path,
    deb: &str,
    dir: &Path,
    prepare: &Mutex<()>,
    report: &mut HostReport,
) -> Result<()> {
    let (kernel, image) = {
        let _one_at_a_time = prepare.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = vm::kernels::fetch(ws, &system.kernel.parse()?, false)?;
        let image = vm::rootfs::ensure(ws, system.suite, &kernel)?;
        (kernel, image)
    };
    report.kernel = format!("{} ({} {})", kernel.meta.release, kernel.meta.package, kernel.meta.version);
    report.image = format!("{} ({}, key {})", system.suite, ws.display(&image.disk()), image.meta.key);

    let forwarded = daemon::free_port()?.port();
    let target = format!("127.0.0.1:{forwarded}");
    let instance = format!("{}-fleet:{AGENT_PORT}", system.suite);
    let mut guest = SystemGuest::boot(&Boot {
        kernel: &kernel,
        image: &image,
        dir: &dir.join("guest"),
        data_disk: Some(data_disk),
        forwards: &[(forwarded, AGENT_PORT)],
        memory_mib: MEMORY_MIB,
        cpus: CPUS,
        ready_limit: BOOT_LIMIT,
    })?;
    report.boot_seconds = guest.boot_seconds;
    let mut host = Host {
        guest: &mut guest,
        report,
        agent: format!("http://{target}"),
        target,
        prometheus: None,
        prometheus_dir: dir.join("prometheus"),
        instance,
    };
    let result = host.all_checks(deb);
    if let Err(e) = guest.shutdown() {
        report.problem(format!("{e:#}"));
    }
    result
}

struct Host<'a> {
    guest: &'a mut SystemGuest,
    report: &'a mut HostReport,
    /// The agent as this machine reaches it: through QEMU's forwarded port (`target`).
    agent: String,
    target: String,
    /// Started after the first workload: nothing may scrape while its scope exists, as with a real scrape
    /// interval longer than a short job.
    prometheus: Option<Prometheus>,
    prometheus_dir: std::path::PathBuf,
    instance: String,
}

/// The BPF objects of the kernel: program, map and link ids.
#[derive(Clone, Debug, Default, PartialEq)]
struct BpfIds {
    progs: BTreeSet<u64>,
    maps: BTreeSet<u64>,
    links: BTreeSet<u64>,
}

impl Host<'_> {
    fn all_checks(&mut self, deb: &str) -> Result<()> {
        let state = self.guest.run("systemctl is-system-running --wait; systemd-analyze", SHORT)?;
        let uname = self.uname()?;
        self.report.section("the booted system", format!("{uname}{}", state.output));
        if !state.output.starts_with("running") {
            let failed = self.guest.run("systemctl --failed --no-pager", SHORT)?;
            self.report.problem(format!("the system is not `running`:\n{}", failed.output));
        }
        self.guest.ok("mkdir -p /srv/fleet && mount -o ro /dev/vdb /srv/fleet", SHORT)?;
        let baseline = self.bpf_ids()?;

        self.install(deb)?;
        self.readiness()?;
        self.process()?;
        self.probes("as installed", false)?;
        self.security()?;
        let scope = self.workload(1, false, false)?;
        self.scraped_by_prometheus(&scope)?;
        self.reload()?;
        self.stop_leaves_nothing(&baseline, "systemctl stop", false)?;
        self.operator_settings()?;
        self.probes("with kernel.perf_event_paranoid=2", true)?;
        let held = self.workload(2, true, true)?;
        self.workload(3, false, false)?;
        self.restart_continues(&held)?;
        self.end_scope(2)?;
        self.stop_leaves_nothing(&baseline, "systemctl stop (maps pinned)", true)?;
        self.no_restart_loop()?;
        self.journal()?;
        self.purge(&baseline)
    }

    fn uname(&mut self) -> Result<String> {
        self.guest.ok(". /etc/os-release; echo \"$PRETTY_NAME, $(uname -r), $(systemctl --version | head -1)\"", SHORT)
    }

    /// `dpkg -i`: the package's postinst enables and starts the unit (Type=notify, so `systemctl start` returns once
    /// the agent said READY=1); then `systemctl is-active` must say `active`.
    fn install(&mut self, deb: &str) -> Result<()> {
        let ran = self.guest.run(&format!("dpkg -i /srv/fleet/{deb}"), LONG)?;
        self.report.section(format!("dpkg -i {deb} ({:.0} s)", ran.seconds), &ran.output);
        if ran.status != 0 {
            let journal = self.guest.run("journalctl -b -u mmuscope --no-pager | tail -30", SHORT)?;
            bail!("dpkg -i exited with {}; journal:\n{}", ran.status, journal.output);
        }
        let active = self.guest.run(
            "for i in $(seq 120); do s=$(systemctl is-active mmuscope); \
             case $s in active) echo \"$s after ${i} poll(s)\"; exit 0;; failed) break;; esac; sleep 1; done; \
             echo \"$s\"; journalctl -b -u mmuscope --no-pager | tail -30; exit 1",
            Duration::from_secs(150),
        )?;
        self.report.section("systemctl is-active mmuscope", &active.output);
        if active.status != 0 {
            bail!("mmuscope did not become active");
        }
        let status = self.guest.run("systemctl status mmuscope --no-pager -l", SHORT)?;
        self.report.section("systemctl status mmuscope", &status.output);
        Ok(())
    }

    /// Type=notify: systemd got the agent's STATUS= and READY=1 (it shows the status text, and the unit became active
    /// only after the agent logged that it had attached and dropped its capabilities).
    fn readiness(&mut self) -> Result<()> {
        let show = self.guest.ok(
            "systemctl show mmuscope -p Type -p NotifyAccess -p StatusText -p User -p DynamicUser \
             -p ExecMainStartTimestampMonotonic -p ActiveEnterTimestampMonotonic",
            SHORT,
        )?;
        let order = self.guest.ok(
            "journalctl -b -u mmuscope -o short-monotonic --no-pager | \
             grep -E 'Starting mmuscope|probe family attached|dropped every capability|Started mmuscope|listening on'",
            SHORT,
        )?;
        self.report.section("readiness (Type=notify)", format!("{show}{order}"));
        let field = |k: &str| show.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").to_string();
        if field("Type") != "notify" {
            self.report.problem(format!("Type={} (expected notify)", field("Type")));
        }
        if !field("StatusText").starts_with("probes attached:") {
            self.report.problem(format!("no STATUS= from the agent: StatusText={:?}", field("StatusText")));
        }
        let line_of = |needle: &str| order.lines().position(|l| l.contains(needle));
        match (line_of("dropped every capability"), line_of("Started mmuscope")) {
            (Some(dropped), Some(started)) if dropped < started => {}
            other => self
                .report
                .problem(format!("systemd reported the unit started before the agent was ready (log lines {other:?})")),
        }
        Ok(())
    }

    /// `/proc/$MAINPID/status`: seccomp filter mode, no capability on any thread, an unprivileged named user.
    fn process(&mut self) -> Result<()> {
        let out = self.guest.ok(
            "P=$(systemctl show -p MainPID --value mmuscope); echo \"MainPID=$P\"; \
             grep -E '^(Name|Uid|Gid|Groups|NoNewPrivs|Seccomp|Seccomp_filters|CapInh|CapPrm|CapEff|CapBnd|CapAmb):' \
             /proc/$P/status; U=$(stat -c %u /proc/$P); echo \"user: $(id -nu $U 2>&1) (uid $U), $(id $U 2>&1)\"; \
             echo 'threads (count, capability sets):'; \
             for t in /proc/$P/task/*; do grep -E '^Cap(Inh|Prm|Eff|Amb)' $t/status | tr -s '\\t\\n' '  '; echo; done | \
             sort | uniq -c",
            SHORT,
        )?;
        self.report.section("the agent's process (/proc/$MAINPID/status)", &out);
        let value = |k: &str| out.lines().find_map(|l| l.strip_prefix(&format!("{k}:"))).map(str::trim).unwrap_or("");
        if value("Seccomp") != "2" {
            self.report.problem(format!("Seccomp: {} (expected 2, a filter)", value("Seccomp")));
        }
        for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            if value(set) != "0000000000000000" {
                self.report.problem(format!("{set}: {} (expected 0 after attaching)", value(set)));
            }
        }
        let uid = value("Uid").split_whitespace().next().unwrap_or("0");
        if uid == "0" || value("NoNewPrivs") != "1" {
            self.report.problem(format!("runs as uid {uid}, NoNewPrivs {}", value("NoNewPrivs")));
        }
        if !out.lines().any(|l| l.starts_with("user: mmuscope ")) {
            self.report.problem("the agent's uid has no user name `mmuscope` on the host");
        }
        let threads: Vec<&str> = out.lines().skip_while(|l| !l.starts_with("threads")).skip(1).collect();
        if threads.iter().any(|l| l.split_whitespace().skip(1).any(|w| w.len() == 16 && w != "0000000000000000")) {
            self.report.problem("a thread still holds capabilities");
        }
        Ok(())
    }

    /// The attach plan of the running agent: every family with an fentry alternative attached in fentry mode.
    /// `subscriber_callbacks` has no fentry alternative (kprobes on module functions): with `callbacks` it must be
    /// attached, else it may be missing only for the reason the docs give (Debian's perf_event_paranoid=3).
    fn probes(&mut self, when: &str, callbacks: bool) -> Result<()> {
        let body = http::get_ok(&format!("{}/api/v1/probes", self.agent))?;
        let plan: Value = serde_json::from_str(&body).context("/api/v1/probes")?;
        let mut lines = Vec::new();
        for f in plan["families"].as_array().context("families")? {
            let name = f["name"].as_str().unwrap_or("?");
            let alts = f["alternatives"].as_array().cloned().unwrap_or_default();
            let attached = alts.iter().find(|a| a["status"] == "attached");
            let has_fentry = alts.iter().any(|a| a["mode"] == "fentry");
            match attached {
                Some(a) => {
                    let mode = a["mode"].as_str().unwrap_or("?");
                    lines.push(format!("{name}: {mode} ({})", a["name"].as_str().unwrap_or("?")));
                    if has_fentry && mode != "fentry" {
                        self.report.problem(format!("{name} attached in {mode} mode although it has fentry"));
                    }
                }
                None => {
                    let why: Vec<String> = alts
                        .iter()
                        .map(|a| format!("{} {}: {}", a["name"].as_str().unwrap_or("?"), a["status"], a["reason"]))
                        .collect();
                    lines.push(format!("{name}: NOT ATTACHED — {}", why.join("; ")));
                    let documented = !has_fentry && !callbacks && why.iter().any(|w| w.contains("perf_event_paranoid"));
                    if !documented {
                        self.report.problem(format!("{name} not attached ({when}): {}", why.join("; ")));
                    }
                }
            }
        }
        self.report.section(format!("probe families ({when}, from /api/v1/probes)"), lines.join("\n"));
        Ok(())
    }

    /// `systemd-analyze security` on the live unit.
    fn security(&mut self) -> Result<()> {
        let out = self.guest.ok("systemd-analyze security mmuscope.service --no-pager", SHORT)?;
        let (score, flagged) = parse_security(&out).with_context(|| format!("no exposure line in:\n{out}"))?;
        let lines: Vec<&str> =
            out.lines().filter(|l| l.trim_start().starts_with('✗') || l.contains("Overall")).collect();
        self.report.section("systemd-analyze security mmuscope.service (live)", lines.join("\n"));
        if score > MAX_EXPOSURE {
            self.report.problem(format!("exposure {score} above {MAX_EXPOSURE} ({} ✗)", flagged.len()));
        }
        Ok(())
    }

    /// kvm-madvise in a transient scope (`systemd-run --scope`), staying in the scope's cgroup. Short-lived, the
    /// scope ends with the workload, before anything scrapes; `held`, it stays (a `sleep` keeps it, as a VM's
    /// process would) until [`end_scope`](Self::end_scope). The agent must count its brackets exactly under the
    /// scope's cgroup path (with `callbacks`, also KVM's invalidate_range_start callbacks). Returns the cgroup path.
    fn workload(&mut self, n: u32, callbacks: bool, held: bool) -> Result<String> {
        let unit = format!("fleet-kvm-madvise-{n}");
        let before = http::get_ok(&format!("{}/metrics", self.agent))?;
        let workload = format!(
            "/srv/fleet/mmuscope-workload kvm-madvise --iterations {ITERATIONS} --cgroup-current \
             >/root/truth-{n}.json 2>/root/workload-{n}.log"
        );
        let command = if held {
            format!(
                "setsid systemd-run --scope --unit={unit} --quiet -- sh -c '{workload}; echo $? >/root/done-{n}; \
                 exec sleep infinity' </dev/null >/dev/null 2>&1 & \
                 for i in $(seq 200); do [ -e /root/done-{n} ] && break; sleep 0.5; done; \
                 cat /root/workload-{n}.log; echo \"scope: $(systemctl is-active {unit}.scope)\"; exit $(cat /root/done-{n})"
            )
        } else {
            format!(
                "systemd-run --scope --unit={unit} --quiet -- {workload}; s=$?; cat /root/workload-{n}.log; \
                 echo \"scope: $(systemctl is-active {unit}.scope)\"; exit $s"
            )
        };
        let ran = self.guest.run(&command, LONG)?;
        let how = if held { "held" } else { "short-lived, ended before any scrape" };
        self.report
            .section(format!("systemd-run --scope --unit={unit} mmuscope-workload kvm-madvise ({how})"), &ran.output);
        if ran.status != 0 {
            bail!("the workload exited with {}", ran.status);
        }
        let truth: Value = serde_json::from_str(&self.guest.ok(&format!("cat /root/truth-{n}.json"), SHORT)?)
            .context("the workload's ground truth")?;
        let cgroup = truth["cgroups"]["default"]["path"].as_str().context("cgroups.default.path")?.to_string();
        if cgroup != format!("/system.slice/{unit}.scope") {
            self.report.problem(format!("the workload ran in {cgroup}, not in its scope's cgroup"));
        }
        let brackets = truth["invalidations"]["brackets"].as_object().context("invalidations.brackets")?.clone();
        let expected_total: u64 = brackets.values().filter_map(Value::as_u64).sum();
        let kvm_calls = truth["invalidations"]["kvm_unmap_hva_range"].as_u64().unwrap_or(0);
        let filter = [("cgroup", cgroup.as_str())];
        // Scraped from this machine through the forwarded port, until the counts arrived (or 20 s).
        let after = daemon::wait_for("the workload's brackets", Duration::from_secs(20), || {
            let text = http::get_ok(&format!("{}/metrics", self.agent))?;
            let total: u64 = sum_by(&text, "mmuscope_invalidations_total", &filter, "cgroup").values().sum();
            Ok((total >= expected_total).then_some(text))
        })
        .unwrap_or_else(|_| http::get_ok(&format!("{}/metrics", self.agent)).unwrap_or_default());
        thread::sleep(Duration::from_secs(1));
        let after = http::get_ok(&format!("{}/metrics", self.agent)).unwrap_or(after);
        let observed = sum_by(&after, "mmuscope_invalidations_total", &filter, "event");
        let histogram = sum_by(&after, "mmuscope_invalidation_duration_seconds_count", &filter, "event");
        for (event, count) in &brackets {
            let want = count.as_u64().unwrap_or(0);
            let label = format!("run {n}: mmuscope_invalidations_total{{cgroup=\"{cgroup}\",event=\"{event}\"}}");
            self.report.compare(label, want, observed.get(event).copied().unwrap_or(0));
            let label =
                format!("run {n}: invalidation_duration_seconds_count{{cgroup=\"{cgroup}\",event=\"{event}\"}}");
            self.report.compare(label, want, histogram.get(event).copied().unwrap_or(0));
        }
        let unknown = |t: &str| sum_by(t, "mmuscope_invalidations_total", &[("cgroup", "unknown")], "cgroup");
        let grown = unknown(&after).values().sum::<u64>().saturating_sub(unknown(&before).values().sum());
        self.report.compare(format!("run {n}: brackets counted as cgroup=\"unknown\""), 0, grown);
        if callbacks {
            let calls = |t: &str| -> u64 {
                sum_by(
                    t,
                    "mmuscope_subscriber_callback_duration_seconds_count",
                    &[("subscriber", "kvm"), ("callback", "invalidate_range_start")],
                    "subscriber",
                )
                .values()
                .sum()
            };
            let label = format!("run {n}: KVM invalidate_range_start callbacks timed (subscriber=\"kvm\")");
            self.report.compare(label, kvm_calls, calls(&after).saturating_sub(calls(&before)));
        }
        Ok(cgroup)
    }

    /// This machine's Prometheus scraped the guest's agent through the forwarded port; a query must return the
    /// workload's figure.
    fn scraped_by_prometheus(&mut self, cgroup: &str) -> Result<()> {
        let (target, instance) = (&self.target, &self.instance);
        let prometheus = Prometheus::start_with_config(
            &self.prometheus_dir,
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mmuscope\n    \
                 static_configs:\n      - targets: ['{target}']\n        labels:\n          instance: '{instance}'\n"
            ),
        )?;
        let prometheus = self.prometheus.insert(prometheus);
        let expr = format!("sum by (instance, event) (mmuscope_invalidations_total{{cgroup=\"{cgroup}\"}})");
        let expected: u64 = self
            .report
            .comparisons
            .iter()
            .filter(|c| c.what.starts_with("run 1: mmuscope_invalidations_total"))
            .map(|c| c.expected)
            .sum();
        let found = daemon::wait_for("Prometheus' answer", Duration::from_secs(30), || {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
            let data = prometheus.query(&expr, now)?;
            let rows = data["result"].as_array().cloned().unwrap_or_default();
            let total: f64 = rows.iter().filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok()).sum();
            Ok((total as u64 == expected && !rows.is_empty()).then_some(rows))
        });
        match found {
            Ok(rows) => {
                let shown: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{} => {}", r["metric"], r["value"][1].as_str().unwrap_or("?")))
                    .collect();
                self.report.section(format!("Prometheus on this machine: {expr}"), shown.join("\n"));
                let total = rows.iter().filter_map(|r| r["value"][1].as_str()?.parse::<f64>().ok()).sum::<f64>();
                self.report.compare(format!("Prometheus ({}): {expr}", self.instance), expected, total as u64);
            }
            Err(e) => {
                let targets = http::get_ok(&prometheus.url("/api/v1/targets")).unwrap_or_default();
                self.report.problem(format!("{e:#}; targets: {targets}"));
            }
        }
        Ok(())
    }

    /// `systemctl reload`: the agent re-reads its config file (log level info → debug) without restarting.
    fn reload(&mut self) -> Result<()> {
        let out = self.guest.ok(
            "P=$(systemctl show -p MainPID --value mmuscope); \
             sed -i 's/^level = \"info\"/level = \"debug\"/' /etc/mmuscope/mmuscope.toml; \
             systemctl reload mmuscope; echo \"reload: exit $?\"; \
             for i in $(seq 30); do journalctl -b -u mmuscope --no-pager | grep -q 'SIGHUP: configuration reloaded' \
             && break; sleep 1; done; \
             journalctl -b -u mmuscope -o short-monotonic --no-pager | grep -E 'Reload|SIGHUP|log level'; \
             echo \"MainPID $P before, $(systemctl show -p MainPID --value mmuscope) after; $(systemctl is-active mmuscope)\"",
            SHORT,
        )?;
        self.report.section("systemctl reload mmuscope", &out);
        // "MainPID 298 before, 298 after; active"
        let pids: Vec<&str> = out.lines().last().unwrap_or("").split_whitespace().collect();
        let same_pid = pids.get(1).is_some() && pids.get(1) == pids.get(3);
        if !out.contains("reload: exit 0")
            || !out.contains("applied=log.level")
            || !same_pid
            || !out.ends_with("active\n")
        {
            self.report.problem("systemctl reload did not apply log.level in the running agent");
        }
        // Back to info, so that the debug lines of the scrapes do not flood the journal.
        self.guest.ok(
            "sed -i 's/^level = \"debug\"/level = \"info\"/' /etc/mmuscope/mmuscope.toml; systemctl reload mmuscope",
            SHORT,
        )?;
        Ok(())
    }

    /// `systemctl stop`: a clean exit (status 0), and no program, map or link of the agent left in the kernel.
    /// With `pinned`, the maps pinned in /sys/fs/bpf/mmuscope stay, and only they.
    fn stop_leaves_nothing(&mut self, baseline: &BpfIds, what: &str, pinned: bool) -> Result<()> {
        let out = self.guest.ok(
            "systemctl stop mmuscope; systemctl show mmuscope -p ActiveState -p Result -p ExecMainCode -p ExecMainStatus; \
             echo \"pinned: $(ls /sys/fs/bpf/mmuscope 2>/dev/null | wc -l) $(ls /sys/fs/bpf/mmuscope 2>/dev/null | tr '\\n' ' ')\"",
            SHORT,
        )?;
        let pins: usize = out
            .lines()
            .find_map(|l| l.strip_prefix("pinned: "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        let now = self.bpf_ids()?;
        let new = |a: &BTreeSet<u64>, b: &BTreeSet<u64>| a.difference(b).copied().collect::<Vec<_>>();
        let (progs, maps, links) =
            (new(&now.progs, &baseline.progs), new(&now.maps, &baseline.maps), new(&now.links, &baseline.links));
        let names = if progs.is_empty() && maps.is_empty() && links.is_empty() {
            String::new()
        } else {
            self.guest.ok("bpftool prog show; bpftool map show; bpftool link show", SHORT)?
        };
        self.report.section(
            what,
            format!(
                "{out}BPF objects besides the ones before the install: programs {progs:?}, maps {maps:?}, links \
                 {links:?}\n{names}"
            ),
        );
        if !out.contains("Result=success") || !out.contains("ExecMainStatus=0") {
            self.report.problem(format!("{what}: the agent did not exit cleanly"));
        }
        let expected_maps = if pinned { pins } else { 0 };
        if pinned && pins == 0 {
            self.report.problem(format!("{what}: nothing pinned in /sys/fs/bpf/mmuscope"));
        }
        if !(progs.is_empty() && maps.len() == expected_maps && links.is_empty()) {
            self.report.problem(format!(
                "{what}: BPF objects left: programs {progs:?}, maps {maps:?} ({expected_maps} pinned), links {links:?}"
            ));
        }
        Ok(())
    }

    /// What an operator turns on: pinned counters (`pin` in the config file), subscriber callback timing on a
    /// Debian kernel (`kernel.perf_event_paranoid=2`, see docs/hardening.md); and for the test only, a drop-in that
    /// makes the system call filter kill (SIGSYS) instead of failing a call with EPERM, so that any call outside
    /// the filter shows.
    fn operator_settings(&mut self) -> Result<()> {
        let out = self.guest.run(
            "sed -i 's|^# pin = \"/sys/fs/bpf/mmuscope\"|pin = \"/sys/fs/bpf/mmuscope\"|' /etc/mmuscope/mmuscope.toml; \
             grep -n '^pin' /etc/mmuscope/mmuscope.toml; sysctl -w kernel.perf_event_paranoid=2; \
             mkdir -p /etc/systemd/system/mmuscope.service.d; \
             printf '[Service]\\n# fleet test: a call outside SystemCallFilter= kills the agent\\nSystemCallErrorNumber=\\n' \
             > /etc/systemd/system/mmuscope.service.d/fleet-test.conf; systemctl daemon-reload; \
             systemctl show -p SystemCallErrorNumber mmuscope; systemctl start mmuscope; s=$?; \
             systemctl status mmuscope --no-pager -l | head -12; \
             [ $s = 0 ] || journalctl -b -u mmuscope --no-pager | tail -20; exit $s",
            LONG,
        )?;
        self.report
            .section("operator settings: pin, perf_event_paranoid=2, kill on filtered calls; start", &out.output);
        if out.status != 0 {
            bail!("the agent did not start with the operator settings");
        }
        Ok(())
    }

    /// Ends a held workload's scope.
    fn end_scope(&mut self, n: u32) -> Result<()> {
        self.guest.ok(&format!("systemctl stop fleet-kvm-madvise-{n}.scope"), SHORT).map(drop)
    }

    /// `systemctl restart` with the counter maps pinned: the live scope's counts are still there afterwards, and
    /// those of a scope removed before the restart are dropped, not exported as `cgroup="unknown"`.
    fn restart_continues(&mut self, cgroup: &str) -> Result<()> {
        let filter = [("cgroup", cgroup)];
        let text = http::get_ok(&format!("{}/metrics", self.agent))?;
        let before = sum_by(&text, "mmuscope_invalidations_total", &filter, "cgroup");
        let unknown = |t: &str| -> u64 {
            sum_by(t, "mmuscope_invalidations_total", &[("cgroup", "unknown")], "cgroup").values().sum()
        };
        let unknown_before = unknown(&text);
        let out = self.guest.run(
            "P=$(systemctl show -p MainPID --value mmuscope); systemctl restart mmuscope; s=$?; \
             echo \"restart: exit $s; MainPID $P before, $(systemctl show -p MainPID --value mmuscope) after\"; \
             ls /sys/fs/bpf/mmuscope; exit $s",
            LONG,
        )?;
        self.report.section("systemctl restart mmuscope (maps pinned)", &out.output);
        if out.status != 0 {
            bail!("systemctl restart failed");
        }
        let text = http::get_ok(&format!("{}/metrics", self.agent))?;
        let after = sum_by(&text, "mmuscope_invalidations_total", &filter, "cgroup");
        let (b, a) = (before.values().sum::<u64>(), after.values().sum::<u64>());
        self.report.compare(format!("brackets of {cgroup} (live) after systemctl restart (pinned)"), b, a);
        let grown = unknown(&text).saturating_sub(unknown_before);
        self.report.compare("brackets turned into cgroup=\"unknown\" by systemctl restart (pinned)", 0, grown);
        Ok(())
    }

    /// A broken config file is exit 2, which a restart cannot fix: the unit must end up failed, not restart every 5 s.
    fn no_restart_loop(&mut self) -> Result<()> {
        let out = self.guest.run(
            "cp /etc/mmuscope/mmuscope.toml /root/config.good; \
             echo 'max-cgroups = true' >> /etc/mmuscope/mmuscope.toml; systemctl start mmuscope; echo \"start: exit $?\"; \
             sleep 7; systemctl show mmuscope -p ActiveState -p Result -p ExecMainStatus -p NRestarts; \
             journalctl -b -u mmuscope --no-pager -n 3 | cut -c1-300; \
             mv /root/config.good /etc/mmuscope/mmuscope.toml; systemctl reset-failed mmuscope",
            SHORT,
        )?;
        self.report.section("a broken config file (exit 2): no restart loop", &out.output);
        for want in ["ActiveState=failed", "ExecMainStatus=2", "NRestarts=0"] {
            if !out.output.lines().any(|l| l == want) {
                self.report.problem(format!("a broken config file: expected {want}"));
            }
        }
        Ok(())
    }

    /// No seccomp kill and no audit or LSM denial anywhere in this boot's journal; the agent's part of it.
    fn journal(&mut self) -> Result<()> {
        let denials = self.guest.run(&format!("journalctl -b --no-pager | grep -E '{DENIALS}'"), SHORT)?;
        let excerpt = self.guest.ok(
            "journalctl -b -u mmuscope -o short-monotonic --no-pager | grep -v 'level=debug' | tail -120 | cut -c1-400",
            SHORT,
        )?;
        let excerpt: Vec<&str> = excerpt.lines().collect();
        let shown = if excerpt.len() > 60 {
            let mut s = excerpt[..30].to_vec();
            s.push("[…]");
            s.extend_from_slice(&excerpt[excerpt.len() - 30..]);
            s
        } else {
            excerpt
        };
        self.report.section(
            format!("journal: grep -E '{DENIALS}' (whole boot)"),
            if denials.output.trim().is_empty() { "(nothing)".to_string() } else { denials.output.clone() },
        );
        self.report.section("journalctl -u mmuscope", shown.join("\n"));
        if !denials.output.trim().is_empty() {
            self.report.problem(format!("denials in the journal:\n{}", denials.output));
        }
        Ok(())
    }

    /// `dpkg --purge`: no file, unit, user, pinned map or BPF object of the package left.
    fn purge(&mut self, baseline: &BpfIds) -> Result<()> {
        let ran = self.guest.run(
            "echo \"(the test's own drop-in, an administrator's file, removed first)\"; \
             rm -r /etc/systemd/system/mmuscope.service.d && systemctl daemon-reload; \
             dpkg --purge mmuscope; s=$?; echo \"--- files named *mmuscope* (/ and /run)\"; \
             find / /run -xdev -name '*mmuscope*' -print; echo '--- /sys/fs/bpf'; ls -A /sys/fs/bpf; \
             echo '--- user and group'; getent passwd mmuscope; getent group mmuscope; echo '--- units'; \
             systemctl list-units --all --plain --no-legend 'mmuscope*'; \
             systemctl list-unit-files --plain --no-legend 'mmuscope*'; exit $s",
            LONG,
        )?;
        let now = self.bpf_ids()?;
        self.report.section(format!("dpkg --purge mmuscope ({:.0} s)", ran.seconds), &ran.output);
        if ran.status != 0 {
            self.report.problem(format!("dpkg --purge exited with {}", ran.status));
        }
        let left: Vec<&str> = ran
            .output
            .lines()
            .skip_while(|l| !l.starts_with("--- files"))
            .filter(|l| !l.starts_with("---") && !l.trim().is_empty())
            .collect();
        if !left.is_empty() {
            self.report.problem(format!("dpkg --purge left: {left:?}"));
        }
        if now != *baseline {
            self.report.problem(format!("BPF objects differ from before the install: {now:?} vs {baseline:?}"));
        }
        Ok(())
    }

    /// The kernel's BPF objects except systemd's own (named `sd_…`: device policies, IP firewalls of units that
    /// start and stop meanwhile).
    fn bpf_ids(&mut self) -> Result<BpfIds> {
        let mut ids = BpfIds::default();
        for (kind, set) in [("prog", &mut ids.progs), ("map", &mut ids.maps), ("link", &mut ids.links)] {
            let out = self.guest.ok(&format!("bpftool -j {kind} show"), SHORT)?;
            let v: Value = serde_json::from_str(out.trim()).with_context(|| format!("bpftool -j {kind} show"))?;
            let ours = |o: &&Value| !o["name"].as_str().is_some_and(|n| n.starts_with("sd_"));
            set.extend(v.as_array().into_iter().flatten().filter(ours).filter_map(|o| o["id"].as_u64()));
        }
        Ok(ids)
    }
}

/// The `.deb` and the workload generator on a data disk (`/dev/vdb` in the guest).
pub fn data_disk(dir: &Path, deb: &Path, workload: &Path) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let stripped = dir.join("mmuscope-workload");
    vm::exec::output(
        std::process::Command::new("objcopy").arg("--strip-debug").arg(workload).arg(&stripped),
        Duration::from_secs(120),
    )?;
    let name = deb.file_name().context("deb name")?.to_string_lossy().into_owned();
    vm::system::data_disk(dir, &[(deb.to_path_buf(), name), (stripped, "mmuscope-workload".into())])
}
