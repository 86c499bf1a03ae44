//! The ServiceMonitor as the Prometheus Operator renders it, end to end: a real Prometheus runs the scrape job the
//! operator generates for `deploy/kubernetes/servicemonitor.yaml` ([`GENERATOR`]), with the `__meta_kubernetes_*`
//! labels endpoints discovery would give the agent's pod, and scrapes the agent on this host while a workload runs in
//! a Kubernetes pod's cgroup (named by kubelet log directories below a scratch `--kubernetes.host-root`). The stored
//! series must keep the workload's `namespace`, `pod` and `container`, with the node's name as `instance`, and the
//! agent's own series must not get the agent's pod. The same job without what the shipped ServiceMonitor adds
//! (`honorLabels`, its relabelings) runs too and shows what it would store instead.

use std::{
    fs,
    path::Path,
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::{
    daemon,
    daemon::Daemon,
    http,
    kubepod::{self, CONTAINER, NAMESPACE, POD},
    prometheus::Prometheus,
    say,
    tools::Tools,
};
use crate::{process, workspace::Workspace};

const GENERATOR: &str = include_str!("scripts/operator_scrape.py");
const SERVICE_MONITOR: &str = "deploy/kubernetes/servicemonitor.yaml";
/// The agent's pod, as discovery would name it.
const AGENT_POD: &str = "mmuscope-x7k2p";
const NODE: &str = "node-a";

pub fn check(ws: &Workspace, tools: &Tools, agent: &Path, workload: &Path) -> Result<()> {
    let dir = ws.target_dir().join("ship/operator");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let pod = kubepod::Pod::create(&dir)?;

    let addr = daemon::free_port()?;
    let mut cmd = Command::new(agent);
    cmd.arg("run")
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!("--kubernetes.host-root={}", pod.host_root.display()));
    let mut running = Daemon::spawn("agent", &mut cmd, &dir.join("agent.log"))?;
    daemon::wait_for("agent /readyz", Duration::from_secs(60), || {
        running.alive()?;
        Ok(http::get(&format!("http://{addr}/readyz"), &[]).ok().filter(|(c, _)| *c == 200))
    })?;

    let (parent, name) = (&pod.parent, &pod.name);
    let result = (|| -> Result<()> {
        let out = process::capture(Command::new(workload).args([
            "kvm-madvise",
            "--iterations",
            "100",
            "--cgroup-parent",
            parent,
            "--cgroup-name",
            name,
        ]))?;
        if !out.status.success() {
            bail!("kvm-madvise in {}: {}", pod.cgroup(), String::from_utf8_lossy(&out.stderr));
        }
        let meta = dir.join("meta.json");
        fs::write(&meta, serde_json::to_string_pretty(&discovered_labels())?)?;
        let generator = dir.join("operator_scrape.py");
        fs::write(&generator, GENERATOR)?;
        let mut stored = Vec::new();
        for variant in ["before", "after"] {
            let mut render = Command::new(&tools.python);
            render.arg(&generator).arg(ws.root.join(SERVICE_MONITOR)).arg(addr.to_string()).arg(&meta);
            if variant == "before" {
                render.arg("--as-before");
            }
            let out = process::capture(&mut render)?;
            if !out.status.success() {
                bail!("operator_scrape.py: {}", String::from_utf8_lossy(&out.stderr));
            }
            let pdir = dir.join(format!("prometheus-{variant}"));
            fs::create_dir_all(&pdir)?;
            let prometheus = Prometheus::start_with_config(&pdir, &String::from_utf8_lossy(&out.stdout))?;
            let workload_series =
                wait_for_series(&prometheus, &format!("mmuscope_invalidations_total{{cgroup=\"{}\"}}", pod.cgroup()))?;
            let own = wait_for_series(&prometheus, "mmuscope_build_info")?;
            say(format!("ServiceMonitor {variant}: workload series {}", show(&workload_series)));
            say(format!("ServiceMonitor {variant}: agent's own series {}", show(&own)));
            stored.push((variant, workload_series, own));
        }
        let (_, after, own) = &stored[1];
        let want =
            [("namespace", NAMESPACE), ("pod", POD), ("container", CONTAINER), ("instance", NODE), ("node", NODE)];
        let mut problems: Vec<String> = want
            .iter()
            .filter(|(k, v)| after.get(*k).and_then(Value::as_str) != Some(*v))
            .map(|(k, v)| format!("workload series {k}={:?}, want {v:?}", after.get(*k)))
            .collect();
        problems
            .extend(after.keys().filter(|k| k.starts_with("exported_")).map(|k| format!("workload series has {k}")));
        problems.extend(
            ["namespace", "pod", "container"]
                .iter()
                .filter(|k| own.contains_key(**k))
                .map(|k| format!("the agent's own series has {k}={}", own[*k])),
        );
        if own.get("instance").and_then(Value::as_str) != Some(NODE) {
            problems.push(format!("the agent's own series has instance={:?}, want {NODE:?}", own.get("instance")));
        }
        let (_, before, _) = &stored[0];
        if before.get("pod").and_then(Value::as_str) != Some(AGENT_POD)
            || before.get("exported_pod").and_then(Value::as_str) != Some(POD)
        {
            problems.push(format!("without honorLabels the agent's pod was expected to overwrite pod (pod={AGENT_POD:?}, exported_pod={POD:?}): {}", show(before)));
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        say(format!(
            "honorLabels and the relabelings keep the workload's namespace/pod/container ({NAMESPACE}/{POD}/{CONTAINER}) and name the node as instance"
        ));
        Ok(())
    })();
    let cleanup =
        process::capture(Command::new(workload).args(["cleanup-cgroup", "--path", &pod.cgroup(), "--prune-parents"]));
    let stopped = running.stop();
    result?;
    cleanup?;
    stopped
}

/// What endpoints discovery gives a target of the agent's Service: its pod on node [`NODE`].
fn discovered_labels() -> Value {
    json!({
        "__meta_kubernetes_namespace": "mmuscope",
        "__meta_kubernetes_service_name": "mmuscope",
        "__meta_kubernetes_endpoint_port_name": "metrics",
        "__meta_kubernetes_endpoint_address_target_kind": "Pod",
        "__meta_kubernetes_endpoint_address_target_name": AGENT_POD,
        "__meta_kubernetes_pod_name": AGENT_POD,
        "__meta_kubernetes_pod_container_name": "mmuscope",
        "__meta_kubernetes_pod_node_name": NODE,
        "__meta_kubernetes_pod_phase": "Running",
    })
}

/// The labels of the first series `selector` returns, once there is one (30 s at most).
fn wait_for_series(prometheus: &Prometheus, selector: &str) -> Result<Map<String, Value>> {
    daemon::wait_for(&format!("a stored {selector}"), Duration::from_secs(30), || {
        let data = prometheus.query(selector, unix_now())?;
        Ok(data["result"].as_array().and_then(|r| r.first()).and_then(|s| s["metric"].as_object()).cloned())
    })
    .context("Prometheus stored no such series")
}

fn show(labels: &Map<String, Value>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    parts.sort();
    format!("{{{}}}", parts.join(", "))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}
