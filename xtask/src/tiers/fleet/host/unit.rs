//! The package's unit through its life on the fleet host: installed and started by `dpkg -i`, ready, reloaded,
//! stopped (nothing of the agent left in the kernel), configured by the operator, restarted, not restarted in a
//! loop, quiet in the journal, purged.

use std::{collections::BTreeSet, time::Duration};

use anyhow::{Result, bail};

use super::{BpfIds, DENIALS, Host, LONG, SHORT};
use crate::tiers::{fleet::exposition::sum_by, ship::http};

impl Host<'_> {
    /// `dpkg -i`: the package's postinst enables and starts the unit (Type=notify, so `systemctl start` returns once
    /// the agent said READY=1); then `systemctl is-active` must say `active`.
    pub(super) fn install(&mut self, deb: &str) -> Result<()> {
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
    pub(super) fn readiness(&mut self) -> Result<()> {
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

    /// `systemctl reload`: the agent re-reads its config file (log level info → debug) without restarting.
    pub(super) fn reload(&mut self) -> Result<()> {
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
    pub(super) fn stop_leaves_nothing(&mut self, baseline: &BpfIds, what: &str, pinned: bool) -> Result<()> {
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
    pub(super) fn operator_settings(&mut self) -> Result<()> {
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

    /// `systemctl restart` with the counter maps pinned: the live scope's counts are still there afterwards, and
    /// those of a scope removed before the restart are dropped, not exported as `cgroup="unknown"`.
    pub(super) fn restart_continues(&mut self, cgroup: &str) -> Result<()> {
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
    pub(super) fn no_restart_loop(&mut self) -> Result<()> {
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
    pub(super) fn journal(&mut self) -> Result<()> {
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
    pub(super) fn purge(&mut self, baseline: &BpfIds) -> Result<()> {
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
}
