//! Tier `ship`: what ships beside the agent, each checked by the real tool (issue "Ship it").
//!
//! * `deploy/systemd`: `systemd-analyze verify` prints nothing, `security --offline=true` rates ≤ 2.5 and every
//!   remaining ✗ is explained in the unit ([`systemd`]); the agent started the way the unit starts it
//!   (unprivileged, ambient capabilities, `NOTIFY_SOCKET`) sends READY=1 and then holds no capability on any
//!   thread, and every system call it makes passes the unit's `SystemCallFilter=` ([`seccomp`]).
//! * `deploy/prometheus`: `promtool check rules`, `promtool test rules`, `promtool check config` ([`rules`]).
//! * `deploy/kubernetes`: `kubectl kustomize`, `kubernetes-validate --strict` for 1.30 and the newest schemas, the
//!   operator's CRs against their API types, copies in sync ([`kube`]).
//! * `dashboards/`: generated JSON up to date, the dashboard-linter checklist ([`dashlint`]), the JSON Schema from
//!   `@grafana/schema` ([`dashboards`]); then every panel query against a real Prometheus scraping a real agent
//!   while workloads run, plus two guests' fentry-mode samples for the families this kernel cannot produce (6.1 with
//!   KVM; 6.12 with the test module's secondary-TLB subscriber, whose 6.6+ series the double-notification row must
//!   show) ([`live`], [`guest`]), and the dashboards rendered to PNG with headless chromium ([`render`]).
//! * The ServiceMonitor: the scrape job the Prometheus Operator generates for it, run by a real Prometheus against
//!   the agent while a workload runs in a Kubernetes pod's cgroup; the stored series keep the workload's namespace,
//!   pod and container ([`operator`]).
//! * The OCI image: built from the .deb with buildah, run with podman under the DaemonSet's capabilities, mounts and
//!   security context; ready, counts a workload exactly, no capability left ([`image`]).
//! * The Debian package: built from the release build, installed, `mmuscope check`, purged without a trace
//!   ([`deb`]).
//!
//! Needs root (dpkg, the agent), `/dev/kvm` (the workloads) and kernel BTF, like `host`, plus kubectl and the `vm`
//! tier's QEMU and kernel cache. Tools from registries go to `.tools/ship/` ([`tools`]). Every step runs even when
//! an earlier one failed, so one run shows all problems.

pub(super) mod daemon;
mod dashboards;
mod dashlint;
mod deb;
mod guest;
pub(super) mod http;
mod image;
mod kube;
mod kubepod;
mod live;
mod operator;
pub(super) mod prometheus;
mod render;
mod rules;
mod seccomp;
pub(super) mod systemd;
pub(super) mod tools;

use std::time::Instant;

use anyhow::{Result, bail};

use super::{Context, Outcome, prerequisites};
use crate::{progress, workspace::Profile};

pub fn run(ctx: &Context) -> Result<Outcome> {
    if let Some(skipped) = prerequisites::unmet_prerequisites(ctx)? {
        return Ok(skipped);
    }
    let ws = ctx.ws;
    let tools = tools::ensure(ws)?;
    let mut steps = Steps::default();
    steps.run("prometheus rules (promtool)", || rules::check(ws));
    steps.run("kubernetes manifests (kustomize, kubernetes-validate)", || kube::check(ws, &tools));
    steps.run("dashboards (generated, linted, JSON Schema)", || dashboards::check(ws, &tools));

    // The release build is what the package ships; the live checks run it too.
    let mut agent = None;
    steps.run("release build of the agent", || {
        agent = Some(ctx.release.path(ws)?);
        Ok(())
    });
    if let Some(agent) = agent {
        let workload = ws.binary(Profile::Debug, "mmuscope-workload");
        steps.run("systemd unit (systemd-analyze verify, security)", || systemd::analyze(ws, &agent));
        steps.run("agent under the unit's privileges (READY=1, capabilities, system call filter)", || {
            systemd::runtime(ws, &agent)
        });
        steps.run("dashboards against a live agent and Prometheus, rendered", || {
            let results = live::run(ws, &agent, &workload)?;
            render::all(ws, &tools, &results)
        });
        steps.run("ServiceMonitor as the Prometheus Operator renders it (labels kept, instance = node)", || {
            operator::check(ws, &tools, &agent, &workload)
        });
        let packaged =
            steps.run("debian package (cargo-deb, dpkg -i, mmuscope check, dpkg --purge)", || deb::check(ws, &tools));
        if packaged {
            steps.run("OCI image (buildah from the .deb; podman run as the DaemonSet runs it)", || {
                image::check(ws, &tools, &workload)
            });
        }
    }
    steps.finish()
}

/// Runs the tier's steps, each announced and timed; remembers the failures.
#[derive(Default)]
struct Steps {
    failed: Vec<String>,
}

impl Steps {
    fn run(&mut self, name: &str, step: impl FnOnce() -> Result<()>) -> bool {
        say(format!("{name} ..."));
        let start = Instant::now();
        let result = step();
        let seconds = progress::seconds(start.elapsed());
        match result {
            Ok(()) => {
                say(format!("{name}: ok ({seconds} s)"));
                true
            }
            Err(err) => {
                say(format!("{name}: FAILED ({seconds} s): {err:#}"));
                self.failed.push(format!("{name}: {err:#}"));
                false
            }
        }
    }

    fn finish(self) -> Result<Outcome> {
        match self.failed.as_slice() {
            [] => Ok(Outcome::Passed),
            [one] => bail!("{one}"),
            many => bail!("{} steps failed: {}", many.len(), many.join("; ")),
        }
    }
}

fn say(message: impl std::fmt::Display) {
    progress::say("ship", message);
}
