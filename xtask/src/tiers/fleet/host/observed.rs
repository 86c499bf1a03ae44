//! What the running agent shows on the fleet host: its process and probe plan, its sandbox, the counts of the
//! workload's scopes in its API and in this machine's Prometheus.

use std::{thread, time::Duration};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{Host, ITERATIONS, LONG, MAX_EXPOSURE, SHORT};
use crate::tiers::{
    fleet::exposition::sum_by,
    ship::{daemon, http, prometheus::Prometheus, systemd::parse_security},
};

impl Host<'_> {
    /// `/proc/$MAINPID/status`: seccomp filter mode, no capability on any thread, an unprivileged named user.
    pub(super) fn process(&mut self) -> Result<()> {
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

    /// The attach plan of the running agent: every family with an fentry alternative attached in fentry mode, unless
    /// the kernel lacks the function it hooks.
    /// `subscriber_callbacks` has no fentry alternative (kprobes on module functions): with `callbacks` it must be
    /// attached, else it may be missing only for the reason the docs give (Debian's perf_event_paranoid=3).
    pub(super) fn probes(&mut self, when: &str, callbacks: bool) -> Result<()> {
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
                    // A family whose hooked function this kernel does not have at all (e.g. `change_pte`, gone in
                    // 6.10) cannot attach in any mode: the plan says so, and that is the expected outcome there.
                    let not_in_kernel = has_fentry
                        && alts.iter().filter(|a| a["mode"] == "fentry").all(|a| {
                            a["status"] == "unavailable"
                                && a["reason"].as_str().is_some_and(|r| r.contains("is not a function in BTF"))
                        });
                    // A family off by default (nothing attached and an alternative `off`: `ksm_cow` without
                    // `--probes.ksm-cow`; in kprobe mode or where fentry programs do not attach again, the families
                    // with hooks attached on demand, without `--probes.keep-attached`) is not attached as installed,
                    // by design. The fleet's hosts (6.1, 6.12, fentry mode) attach those on demand.
                    let off = alts.iter().any(|a| a["status"] == "off");
                    lines.push(format!(
                        "{name}: NOT ATTACHED{} — {}",
                        if not_in_kernel {
                            " (this kernel has no such function)"
                        } else if off {
                            " (off by default)"
                        } else {
                            ""
                        },
                        why.join("; ")
                    ));
                    let documented = !has_fentry && !callbacks && why.iter().any(|w| w.contains("perf_event_paranoid"));
                    if !documented && !not_in_kernel && !off {
                        self.report.problem(format!("{name} not attached ({when}): {}", why.join("; ")));
                    }
                }
            }
        }
        self.report.section(format!("probe families ({when}, from /api/v1/probes)"), lines.join("\n"));
        Ok(())
    }

    /// `systemd-analyze security` on the live unit.
    pub(super) fn security(&mut self) -> Result<()> {
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
    pub(super) fn workload(&mut self, n: u32, callbacks: bool, held: bool) -> Result<String> {
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
    pub(super) fn scraped_by_prometheus(&mut self, cgroup: &str) -> Result<()> {
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

    /// Ends a held workload's scope.
    pub(super) fn end_scope(&mut self, n: u32) -> Result<()> {
        self.guest.ok(&format!("systemctl stop fleet-kvm-madvise-{n}.scope"), SHORT).map(drop)
    }
}
