"""The Prometheus scrape job the Prometheus Operator generates for a ServiceMonitor, for one discovered target.

Usage: operator_scrape.py SERVICEMONITOR.yaml TARGET META.json [--as-before]
Prints a complete prometheus.yml (JSON, which is YAML) on stdout.

The operator turns each ServiceMonitor endpoint into a `kubernetes_sd_configs` job whose relabelling sets
`namespace`, `service`, `pod`, `container`, `job` and `endpoint` from the discovered endpoint, then applies the
endpoint's own `relabelings` and `metricRelabelings`, with `honor_labels` from `honorLabels` (its generated
configuration, as in prometheus-operator's pkg/prometheus golden files). Without a Kubernetes API here, the
discovered target is a static target carrying the `__meta_kubernetes_*` labels that endpoints discovery would give
the agent's pod (META.json), so every relabelling step runs for real in Prometheus.

--as-before drops what the shipped ServiceMonitor adds against the operator's defaults (honorLabels, relabelings),
to show what an unconfigured ServiceMonitor would store.
"""

import json
import sys

import yaml

# ServiceMonitor relabeling keys (camelCase) → Prometheus relabel_config keys.
KEYS = {
    "sourceLabels": "source_labels",
    "targetLabel": "target_label",
    "action": "action",
    "regex": "regex",
    "replacement": "replacement",
    "separator": "separator",
    "modulus": "modulus",
}


def convert(relabelings):
    out = []
    for r in relabelings or []:
        unknown = set(r) - set(KEYS)
        if unknown:
            raise SystemExit(f"relabeling key(s) {sorted(unknown)} not handled by this generator")
        c = {KEYS[k]: v for k, v in r.items()}
        if "action" in c:
            c["action"] = c["action"].lower()
        out.append(c)
    return out


def job(monitor, index, endpoint, target, meta, as_before):
    port = endpoint["port"]
    relabel = [
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"], "regex": port},
        {
            "source_labels": ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"],
            "separator": ";",
            "regex": "Node;(.*)",
            "replacement": "${1}",
            "target_label": "node",
        },
        {
            "source_labels": ["__meta_kubernetes_endpoint_address_target_kind", "__meta_kubernetes_endpoint_address_target_name"],
            "separator": ";",
            "regex": "Pod;(.*)",
            "replacement": "${1}",
            "target_label": "pod",
        },
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)"},
        {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job", "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": port},
    ]
    if not as_before:
        relabel += convert(endpoint.get("relabelings"))
    name = monitor["metadata"]["name"]
    return {
        "job_name": f"serviceMonitor/{meta['__meta_kubernetes_namespace']}/{name}/{index}",
        "honor_labels": bool(endpoint.get("honorLabels", False)) and not as_before,
        # The tier scrapes every second (the shipped interval is for production).
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": endpoint.get("path", "/metrics"),
        "static_configs": [{"targets": [target], "labels": meta}],
        "relabel_configs": relabel,
        "metric_relabel_configs": [] if as_before else convert(endpoint.get("metricRelabelings")),
    }


def main(path, target, meta_path, as_before):
    monitor = yaml.safe_load(open(path))
    meta = json.load(open(meta_path))
    jobs = [job(monitor, i, e, target, meta, as_before) for i, e in enumerate(monitor["spec"]["endpoints"])]
    print(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"}, "scrape_configs": jobs}, indent=1))


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--as-before"]
    if len(args) != 3:
        raise SystemExit(__doc__)
    main(*args, as_before="--as-before" in sys.argv[1:])
