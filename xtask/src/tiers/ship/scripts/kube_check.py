"""Checks on the rendered kustomization that need a YAML parser (run in the ship tier's venv, which has PyYAML).

Usage: kube_check.py RENDERED.yaml RULES.yml CRS_OUT.json
* The PrometheusRule's spec.groups must equal the groups of deploy/prometheus/mmuscope.rules.yml.
* The DaemonSet must not be privileged, must add capabilities explicitly, mount host paths read-only, and have
  resources and both probes (the issue's requirements, checked so that a later edit cannot lose them).
* Writes the operator's custom resources (ServiceMonitor, PrometheusRule) to CRS_OUT.json for validate_crs.mjs.
"""

import json
import sys

import yaml


def main(rendered, rules, out):
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    problems = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    print("rendered:", ", ".join(f"{k} x{len(v)}" for k, v in sorted(by_kind.items())))

    groups = yaml.safe_load(open(rules))["groups"]
    for rule in by_kind.get("PrometheusRule", []):
        if rule["spec"]["groups"] != groups:
            problems.append("PrometheusRule spec.groups differ from deploy/prometheus/mmuscope.rules.yml")

    for ds in by_kind.get("DaemonSet", []):
        pod = ds["spec"]["template"]["spec"]
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            name = f"DaemonSet {ds['metadata']['name']} container {c['name']}"
            if sc.get("privileged", False):
                problems.append(f"{name} is privileged")
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"] or not caps.get("add"):
                problems.append(f"{name} must drop ALL and add its capabilities explicitly")
            if sc.get("allowPrivilegeEscalation", True):
                problems.append(f"{name} allows privilege escalation")
            res = c.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                problems.append(f"{name} lacks resource requests or limits")
            probes = {p: c.get(p, {}).get("httpGet", {}).get("path") for p in ("livenessProbe", "readinessProbe")}
            if probes != {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}:
                problems.append(f"{name} probes are {probes}, want /healthz and /readyz")
            host_paths = {v["name"] for v in pod.get("volumes", []) if "hostPath" in v}
            for m in c.get("volumeMounts", []):
                if m["name"] in host_paths and not m.get("readOnly"):
                    problems.append(f"{name} mounts host path volume {m['name']} writable")
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(flag):
                problems.append(f"DaemonSet uses {flag}")

    crs = by_kind.get("ServiceMonitor", []) + by_kind.get("PrometheusRule", [])
    json.dump(crs, open(out, "w"))
    for p in problems:
        print("PROBLEM:", p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
