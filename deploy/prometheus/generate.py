#!/usr/bin/env python3
"""Writes mmuscope's Prometheus rules from one definition, in the style of a monitoring mixin: the job selector,
the thresholds and the runbook address are parameters (CONFIG below, or the flags), and the same groups go to

* deploy/prometheus/mmuscope.rules.yml (rule_files for a plain Prometheus; installed by the Debian package), and
* deploy/kubernetes/prometheusrule.yaml (the same groups for the Prometheus Operator).

The committed files are written with the defaults; `promtool test rules mmuscope.rules.test.yml` tests them, and the
`ship` test tier runs `--check` (fails when the files are not what this script writes), the promtool tests, and the
rules against live data. For your site, write your own copies, e.g.

    python3 deploy/prometheus/generate.py --selector 'job="node-mmuscope"' \\
        --runbook-url 'https://wiki.example.org/mmuscope/runbook#{anchor}' --set storm_rate=50000 --out /etc/prometheus

Stdlib only; run from anywhere.
"""

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

CONFIG = {
    # Every expression selects the agent's series with this (the job Prometheus scrapes the agents as).
    "selector": 'job="mmuscope"',
    # `{anchor}` is the alert name in lower case, as the headings of runbook.md (installed by the Debian package
    # as /usr/share/doc/mmuscope/runbook.md; publish it where your alerts can link to it).
    "runbook_url": "https://example.invalid/mmuscope/blob/main/deploy/prometheus/runbook.md#{anchor}",
    "agent_down_for": "5m",
    "probe_not_attached_for": "15m",
    # Invalidations per second of one cgroup's memory.
    "storm_rate": 20000,
    "storm_for": "10m",
    # p99 of one bracket, seconds, while the cgroup has at least latency_min_rate brackets per second.
    "latency_p99_seconds": 0.001,
    "latency_min_rate": 1,
    "latency_for": "15m",
    # Double notifications per second below which a rise is not worth an alert.
    "doubles_min_rate": 1,
    "doubles_for": "15m",
    # Bytes per second copied eagerly by fork().
    "fork_copy_bytes_rate": 1048576,
    "fork_copies_for": "10m",
    "map_full_for": "5m",
    "collection_errors_for": "5m",
    "events_missed_for": "5m",
    "cgroup_overflow_for": "15m",
    # GPU/RDMA (interval notifiers). hmm_range_fault -EBUSY per second of one cgroup: each is a device fault that
    # collided with an invalidation and walks its range again.
    "hmm_busy_rate": 10,
    "hmm_busy_for": "10m",
    # Device-fault readers per second of one cgroup and subscriber that slept in mmu_interval_read_begin until an
    # invalidation ended.
    "reader_waits_rate": 10,
    "reader_waits_for": "10m",
    # p99 of the brackets that reached one subscriber kind, seconds, while it gets at least subscriber_min_rate
    # brackets per second (a GPU driver's invalidate waits for the device to drop its mappings).
    "subscriber_latency_p99_seconds": 0.005,
    "subscriber_latency_min_rate": 1,
    "subscriber_latency_for": "15m",
}

HEADER = """\
# Recording and alerting rules for mmuscope, written by deploy/prometheus/generate.py (edit that, not this file; its
# CONFIG holds the job selector, the thresholds and the runbook address). Tested by `promtool test rules
# mmuscope.rules.test.yml` (in the `ship` test tier); deploy/kubernetes/prometheusrule.yaml carries the same groups.
#
# Names follow level:metric:operations. "instance" rules sum over every cgroup of one host; "instance_cgroup" rules
# keep the cgroup and its Kubernetes labels (namespace, pod, container; empty outside Kubernetes).
"""

OPERATOR_HEADER = """\
# The groups of deploy/prometheus/mmuscope.rules.yml, for the Prometheus Operator; written by
# deploy/prometheus/generate.py with the same CONFIG. Your Prometheus' ruleSelector may want a label such as
# `release: <name>` here.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: mmuscope
  labels:
    app.kubernetes.io/name: mmuscope
spec:
"""

CG = "job, instance, cgroup, namespace, pod, container"


def groups(c):
    sel = c["selector"]

    def m(name):
        return f"{name}{{{sel}}}"

    records = [
        ("instance:mmuscope_invalidations:rate5m", f"sum by (job, instance) (rate({m('mmuscope_invalidations_total')}[5m]))"),
        ("instance_cgroup:mmuscope_invalidations:rate5m", f"sum by ({CG}) (rate({m('mmuscope_invalidations_total')}[5m]))"),
        ("instance_event:mmuscope_invalidations:rate5m", f"sum by (job, instance, event) (rate({m('mmuscope_invalidations_total')}[5m]))"),
        (
            "instance:mmuscope_invalidation_duration_seconds_bucket:rate5m",
            f"sum by (job, instance, le) (rate({m('mmuscope_invalidation_duration_seconds_bucket')}[5m]))",
        ),
        ("instance:mmuscope_invalidation_duration_seconds:p50_5m", "histogram_quantile(0.5, instance:mmuscope_invalidation_duration_seconds_bucket:rate5m)"),
        ("instance:mmuscope_invalidation_duration_seconds:p99_5m", "histogram_quantile(0.99, instance:mmuscope_invalidation_duration_seconds_bucket:rate5m)"),
        (
            "instance_cgroup:mmuscope_invalidation_duration_seconds_bucket:rate5m",
            f"sum by ({CG}, le) (rate({m('mmuscope_invalidation_duration_seconds_bucket')}[5m]))",
        ),
        (
            "instance_cgroup:mmuscope_invalidation_duration_seconds:p50_5m",
            "histogram_quantile(0.5, instance_cgroup:mmuscope_invalidation_duration_seconds_bucket:rate5m)",
        ),
        (
            "instance_cgroup:mmuscope_invalidation_duration_seconds:p99_5m",
            "histogram_quantile(0.99, instance_cgroup:mmuscope_invalidation_duration_seconds_bucket:rate5m)",
        ),
        ("instance_cgroup:mmuscope_secondary_tlb_invalidations:rate5m", f"sum by ({CG}) (rate({m('mmuscope_secondary_tlb_invalidations_total')}[5m]))"),
        ("instance_cgroup:mmuscope_double_notifications:rate5m", f"sum by ({CG}) (rate({m('mmuscope_double_notifications_total')}[5m]))"),
        ("instance_cgroup:mmuscope_fork_pinned_copy_bytes:rate5m", f"sum by ({CG}) (rate({m('mmuscope_fork_pinned_copy_bytes_total')}[5m]))"),
        ("instance:mmuscope_fork_pinned_page_copies:rate5m", f"sum by (job, instance) (rate({m('mmuscope_fork_pinned_page_copies_total')}[5m]))"),
        # GPU/RDMA subscribers: the dashboards' row of the same name, per cgroup or per subscriber kind.
        ("instance_cgroup:mmuscope_interval_invalidations:rate5m", f"sum by ({CG}) (rate({m('mmuscope_interval_invalidations_total')}[5m]))"),
        ("instance_cgroup:mmuscope_hmm_range_fault_busy:rate5m", f"sum by ({CG}) (rate({m('mmuscope_hmm_range_fault_busy_total')}[5m]))"),
        (
            "instance_cgroup_subscriber:mmuscope_interval_read_waits:rate5m",
            f"sum by ({CG}, subscriber) (rate({m('mmuscope_interval_read_waits_total')}[5m]))",
        ),
        ("instance_subscriber:mmuscope_invalidations:rate5m", f"sum by (job, instance, subscriber) (rate({m('mmuscope_invalidations_total')}[5m]))"),
        (
            "instance_subscriber:mmuscope_invalidation_duration_seconds_bucket:rate5m",
            f"sum by (job, instance, subscriber, le) (rate({m('mmuscope_invalidation_duration_seconds_bucket')}[5m]))",
        ),
        (
            "instance_subscriber:mmuscope_invalidation_duration_seconds:p99_5m",
            "histogram_quantile(0.99, instance_subscriber:mmuscope_invalidation_duration_seconds_bucket:rate5m)",
        ),
    ]
    # Recording rules carry the selector in their inputs, so the alerts built on them need none. In descriptions,
    # `<for>` is the alert's `for` in words and `<p99>` its latency threshold.
    def alert(name, expr, for_key, severity, summary, description, p99_key=None):
        text = description.replace("<for>", words(c[for_key]))
        if p99_key:
            text = text.replace("<p99>", duration_text(c[p99_key]))
        return dict(alert=name, expr=expr, for_=c[for_key], severity=severity, summary=summary, description=text)

    def rate_above(name, record, rate_key, for_key, severity, summary, description):
        """A per-second rate (a recording rule) above a threshold for a while."""
        return alert(name, f"{record} > {c[rate_key]}", for_key, severity, summary, description)

    def p99_above(name, what, on, p99_key, rate_key, for_key, summary, description, only=""):
        """A p99 of brackets above a threshold while there are enough brackets for a p99 to mean something."""
        level = "instance_" + what
        expr = (
            f"{level}:mmuscope_invalidation_duration_seconds:p99_5m{only} > {c[p99_key]} "
            f"and on ({on}) {level}:mmuscope_invalidations:rate5m > {c[rate_key]}"
        )
        return alert(name, expr, for_key, "warning", summary, description, p99_key)

    def map_failing(name, metric, operations, for_key, summary, consequence):
        """A map operation kept failing in the last ten minutes."""
        description = operations + " of the kernel map {{ $labels.map }} kept failing for <for>: " + consequence
        return alert(name, f"increase({m(metric)}[10m]) > 0", for_key, "warning", summary, description)

    alerts = [
        alert(
            "MmuscopeAgentDown",
            f"up{{{sel}}} == 0",
            "agent_down_for",
            "warning",
            "mmuscope on {{ $labels.instance }} cannot be scraped",
            "Prometheus has failed to scrape the mmuscope agent on {{ $labels.instance }} for <for>; this host's "
            "secondary-MMU metrics are missing.",
        ),
        alert(
            "MmuscopeProbeNotAttached",
            f"max by (job, instance, probe) ({m('mmuscope_probe_attached')}) == 0",
            "probe_not_attached_for",
            "info",
            "mmuscope probe family {{ $labels.probe }} is not attached on {{ $labels.instance }}",
            "No attach alternative of the {{ $labels.probe }} probe family is in use on {{ $labels.instance }}, so the "
            "metrics it feeds are absent there.",
        ),
        rate_above(
            "MmuscopeInvalidationStorm",
            "instance_cgroup:mmuscope_invalidations:rate5m",
            "storm_rate",
            "storm_for",
            "warning",
            "Invalidation storm in {{ $labels.cgroup }} on {{ $labels.instance }}",
            "{{ $value | humanize }} mmu_notifier invalidations per second for <for> in cgroup {{ $labels.cgroup }} "
            "(pod {{ $labels.namespace }}/{{ $labels.pod }}). Each one stalls the secondary MMUs (KVM, IOMMU, "
            "GPU/RDMA) of that memory.",
        ),
        p99_above(
            "MmuscopeInvalidationLatencyHigh",
            "cgroup",
            CG,
            "latency_p99_seconds",
            "latency_min_rate",
            "latency_for",
            "Slow invalidations in {{ $labels.cgroup }} on {{ $labels.instance }}",
            "The 99th percentile of invalidate_range_start → end in cgroup {{ $labels.cgroup }} has been above <p99> "
            "for <for> ({{ $value | humanizeDuration }}). Faults on that memory wait for it.",
        ),
        alert(
            "MmuscopeDoubleNotificationsRising",
            f"instance_cgroup:mmuscope_double_notifications:rate5m > {c['doubles_min_rate']} unless "
            "instance_cgroup:mmuscope_double_notifications:rate5m <= 2 * (instance_cgroup:mmuscope_double_notifications:rate5m offset 1h)",
            "doubles_for",
            "info",
            "Double notifications rising in {{ $labels.cgroup }} on {{ $labels.instance }}",
            "{{ $value | humanize }}/s secondary-TLB ranges are invalidated twice for one operation in cgroup "
            "{{ $labels.cgroup }}, at least twice the rate of an hour ago (or new).",
        ),
        rate_above(
            "MmuscopeForkPinnedCopies",
            "instance_cgroup:mmuscope_fork_pinned_copy_bytes:rate5m",
            "fork_copy_bytes_rate",
            "fork_copies_for",
            "info",
            "fork() copies pinned pages in {{ $labels.cgroup }} on {{ $labels.instance }}",
            "fork() in cgroup {{ $labels.cgroup }} has copied {{ $value | humanize1024 }}B/s of possibly DMA-pinned "
            "memory eagerly for <for>.",
        ),
        rate_above(
            "MmuscopeHmmRangeFaultBusy",
            "instance_cgroup:mmuscope_hmm_range_fault_busy:rate5m",
            "hmm_busy_rate",
            "hmm_busy_for",
            "warning",
            "Device faults collide with invalidations in {{ $labels.cgroup }} on {{ $labels.instance }}",
            "{{ $value | humanize }} hmm_range_fault calls per second have returned -EBUSY for <for> in cgroup "
            "{{ $labels.cgroup }} (pod {{ $labels.namespace }}/{{ $labels.pod }}): GPU or RDMA faults on that memory "
            "keep colliding with invalidations and start over.",
        ),
        rate_above(
            "MmuscopeIntervalReaderWaits",
            "instance_cgroup_subscriber:mmuscope_interval_read_waits:rate5m",
            "reader_waits_rate",
            "reader_waits_for",
            "info",
            "{{ $labels.subscriber }} faults wait for invalidations in {{ $labels.cgroup }} on {{ $labels.instance }}",
            "{{ $value | humanize }} device faults per second of {{ $labels.subscriber }} in cgroup "
            "{{ $labels.cgroup }} have waited in mmu_interval_read_begin for an invalidation in flight, for <for>.",
        ),
        p99_above(
            "MmuscopeSubscriberLatencyHigh",
            "subscriber",
            "job, instance, subscriber",
            "subscriber_latency_p99_seconds",
            "subscriber_latency_min_rate",
            "subscriber_latency_for",
            "Invalidations reaching {{ $labels.subscriber }} are slow on {{ $labels.instance }}",
            "The 99th percentile of the invalidation brackets that reach {{ $labels.subscriber }} has been above "
            "<p99> for <for> ({{ $value | humanizeDuration }}). munmap, madvise, reclaim and migration of that memory "
            "wait for it.",
            only='{subscriber!="none"}',
        ),
        map_failing(
            "MmuscopeMapFull",
            "mmuscope_map_update_errors_total",
            "Updates",
            "map_full_for",
            "mmuscope map {{ $labels.map }} is full on {{ $labels.instance }}",
            "some events were not counted, so counts on this host are low.",
        ),
        map_failing(
            "MmuscopeCollectionErrors",
            "mmuscope_map_read_errors_total",
            "Reads",
            "collection_errors_for",
            "mmuscope cannot read its map {{ $labels.map }} on {{ $labels.instance }}",
            "the scrapes and API requests that needed it failed, so this host's series have gaps.",
        ),
        alert(
            "MmuscopeEventsMissed",
            f"sum by (job, instance, program) (increase({m('mmuscope_bpf_program_recursion_misses_total')}[10m])) > 0",
            "events_missed_for",
            "warning",
            "mmuscope's program {{ $labels.program }} skips runs on {{ $labels.instance }}",
            "The kernel kept skipping runs of {{ $labels.program }} for <for> because it was already running on that "
            "CPU (a task preempted inside it): the events of those runs were not counted, so counts on this host are "
            "low.",
        ),
        alert(
            "MmuscopeCgroupOverflow",
            f"increase({m('mmuscope_cgroups_overflow_total')}[1h]) > 0",
            "cgroup_overflow_for",
            "info",
            'mmuscope on {{ $labels.instance }} aggregates cgroups into cgroup="other"',
            "{{ $value | humanize }} cgroups with activity in the last hour exceeded --max-cgroups on "
            '{{ $labels.instance }} and are counted only in cgroup="other".',
        ),
    ]
    for a in alerts:
        a["runbook_url"] = c["runbook_url"].format(anchor=a["alert"].lower())
    return records, alerts


def words(duration):
    """`15m` → `15 minutes` (Prometheus durations of one unit)."""
    n, unit = int(duration[:-1]), {"s": "second", "m": "minute", "h": "hour", "d": "day"}[duration[-1]]
    return f"{n} {unit}{'' if n == 1 else 's'}"


def duration_text(seconds):
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def q(s):
    """A YAML double-quoted scalar (a JSON string is one)."""
    return json.dumps(s, ensure_ascii=False)


def render(records, alerts, indent):
    p = " " * indent
    out = [f"{p}groups:", f"{p}  - name: mmuscope.records", f"{p}    rules:"]
    for name, expr in records:
        out += [f"{p}      - record: {name}", f"{p}        expr: {q(expr)}"]
    out += ["", f"{p}  - name: mmuscope.alerts", f"{p}    rules:"]
    for i, a in enumerate(alerts):
        if i:
            out.append("")
        out += [
            f"{p}      - alert: {a['alert']}",
            f"{p}        expr: {q(a['expr'])}",
            f"{p}        for: {a['for_']}",
            f"{p}        labels:",
            f"{p}          severity: {a['severity']}",
            f"{p}        annotations:",
            f"{p}          summary: {q(a['summary'])}",
            f"{p}          description: {q(a['description'])}",
            f"{p}          runbook_url: {q(a['runbook_url'])}",
        ]
    return "\n".join(out) + "\n"


def outputs(config):
    records, alerts = groups(config)
    return {
        "mmuscope.rules.yml": HEADER + render(records, alerts, 0),
        "prometheusrule.yaml": OPERATOR_HEADER + render(records, alerts, 2),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if the committed files differ from what this writes")
    ap.add_argument("--selector", help=f"label matchers of the agent's series (default {CONFIG['selector']})")
    ap.add_argument("--runbook-url", help="runbook address with {anchor} for the alert's anchor")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a threshold or duration of CONFIG")
    ap.add_argument("--out", type=Path, help="write both files into this directory (default: their places here)")
    args = ap.parse_args()
    config = dict(CONFIG)
    if args.selector:
        config["selector"] = args.selector
    if args.runbook_url:
        if "{anchor}" not in args.runbook_url:
            sys.exit("--runbook-url needs {anchor} where the alert's anchor goes")
        config["runbook_url"] = args.runbook_url
    for kv in args.set:
        key, _, value = kv.partition("=")
        if key not in CONFIG or key in ("selector", "runbook_url"):
            sys.exit(f"--set {kv}: unknown key {key!r}; one of {', '.join(k for k in CONFIG if k not in ('selector', 'runbook_url'))}")
        default = CONFIG[key]
        try:
            config[key] = type(default)(value) if not isinstance(default, str) else value
        except ValueError:
            sys.exit(f"--set {kv}: {key} takes a {type(default).__name__}")
    places = {"mmuscope.rules.yml": HERE, "prometheusrule.yaml": ROOT / "deploy/kubernetes"}
    stale = []
    for name, text in outputs(config).items():
        path = (args.out or places[name]) / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        sys.exit(f"not what deploy/prometheus/generate.py writes (run it): {', '.join(stale)}")


if __name__ == "__main__":
    main()
