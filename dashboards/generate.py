#!/usr/bin/env python3
"""Writes mmuscope's Grafana dashboards (dashboards/*.json) from the panel lists below.

Why a generator: every panel must carry the same datasource reference, a unit, a description and selectors with
`job`, `instance` (and `cgroup`) matchers; writing ~40 panels of Grafana JSON by hand drifts. The JSON files are
committed (Grafana provisions them as they are); `python3 dashboards/generate.py --check` fails when they are not
what this script writes, and the `ship` test tier runs that check, the dashboard linter, the JSON Schema from
@grafana/schema and every query against a real Prometheus.

Stdlib only; run from anywhere: `python3 dashboards/generate.py` rewrites, `--check` compares.
"""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}
# Grafana 11/12 dashboard JSON model version.
SCHEMA_VERSION = 41

# Matchers every query carries (the linter checks them): host-level and cgroup-level families.
HOST = 'job=~"$job", node=~"$node", instance=~"$instance"'
CG = HOST + ', namespace=~"$namespace", pod=~"$pod", cgroup=~"$cgroup"'
RATE = "[$__rate_interval]"


def rate(metric, matchers=CG):
    return f"rate({metric}{{{matchers}}}{RATE})"


def target(expr, legend="", instant=False, fmt="time_series", ref="A"):
    t = {"datasource": DS, "refId": ref, "expr": expr, "legendFormat": legend or "__auto"}
    if instant:
        t.update(instant=True, range=False)
    else:
        t.update(range=True)
    if fmt != "time_series":
        t["format"] = fmt
    return t


class Layout:
    """Places panels left to right on Grafana's 24-column grid, wrapping into new rows."""

    def __init__(self):
        self.x, self.y, self.row_h, self.next_id = 0, 0, 0, 1

    def place(self, panel, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += w
        self.row_h = max(self.row_h, h)
        return panel

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
        panel = self.place(panel, 24, 1)
        self.x, self.y, self.row_h = 0, self.y + 1, 0
        return panel


def panel(kind, title, description, unit, targets, options=None, custom=None, extra=None, thresholds=None,
          overrides=None):
    defaults = {"unit": unit}
    if custom is not None:
        defaults["custom"] = custom
    if thresholds is not None:
        # [(color, from value)], the first from -Infinity (null in Grafana's JSON).
        steps = [{"color": c, "value": v} for c, v in thresholds]
        defaults["thresholds"] = {"mode": "absolute", "steps": steps}
        defaults["color"] = {"mode": "thresholds"}
    p = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
        "targets": [dict(t, refId=chr(ord("A") + i)) for i, t in enumerate(targets)],
    }
    p.update(extra or {})
    return p


def unit_of(ref, unit):
    """A field override: query `ref`'s series in `unit`, on their own axis on the right."""
    return {"matcher": {"id": "byFrameRefID", "options": ref},
            "properties": [{"id": "unit", "value": unit}, {"id": "custom.axisPlacement", "value": "right"}]}


def timeseries(title, description, unit, *targets, stack=False, overrides=None):
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    if stack:
        custom.update(stacking={"mode": "normal", "group": "A"}, fillOpacity=30)
    options = {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True, "calcs": ["mean", "max"]},
               "tooltip": {"mode": "multi", "sort": "desc"}}
    return panel("timeseries", title, description, unit, targets, options, custom, overrides=overrides)


# Stat colours: a count that is bad when it is not 0; one that is bad when it is 0; a plain figure.
BAD_ABOVE_0 = [("green", None), ("red", 1)]
BAD_AT_0 = [("red", None), ("green", 1)]
NEUTRAL = [("text", None)]


def stat(title, description, unit, expr, thresholds):
    options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
               "colorMode": "value", "graphMode": "area", "textMode": "auto", "justifyMode": "auto",
               "orientation": "auto", "percentChangeColorMode": "standard", "showPercentChange": False,
               "wideLayout": True}
    return panel("stat", title, description, unit, [target(expr, instant=True)], options, thresholds=thresholds)


def table(title, description, unit, expr, organize=None):
    options = {"showHeader": True, "cellHeight": "sm", "frameIndex": 0}
    transformations = [{"id": "labelsToFields", "options": {"mode": "columns"}}]
    if organize:
        transformations.append({"id": "organize", "options": organize})
    return panel("table", title, description, unit, [target(expr, instant=True, fmt="table")], options,
                 extra={"transformations": transformations})


def bargauge(title, description, unit, expr, legend):
    options = {"orientation": "horizontal", "displayMode": "gradient", "showUnfilled": True, "valueMode": "color",
               "namePlacement": "auto", "sizing": "auto", "minVizHeight": 16, "maxVizHeight": 300, "minVizWidth": 8,
               "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom", "calcs": []},
               "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
    return panel("bargauge", title, description, unit, [target(expr, legend, instant=True)], options)


def heatmap(title, description, expr):
    options = {"calculate": False, "cellGap": 1, "yAxis": {"unit": "s", "axisPlacement": "left"},
               "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64, "exponent": 0.5, "fill": "dark-orange",
                         "reverse": False, "scale": "exponential"},
               "rowsFrame": {"layout": "auto"}, "tooltip": {"mode": "single", "yHistogram": True},
               "legend": {"show": True}, "showValue": "never", "exemplars": {"color": "rgba(255,0,255,0.7)"}, "filterValues": {"le": 1e-9}}
    return panel("heatmap", title, description, "s", [target(expr, "{{le}}", fmt="heatmap")], options,
                 custom={"hideFrom": {"legend": False, "tooltip": False, "viz": False}, "scaleDistribution": {"type": "linear"}})


def variables(cgroup_source="mmuscope_invalidations_total"):
    def query_var(name, label, query, description):
        return {"name": name, "label": label, "description": description, "type": "query", "datasource": DS,
                "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [], "hide": 0,
                "regex": ""}

    return {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus", "refresh": 1,
         "description": "The Prometheus that scrapes the mmuscope agents.",
         "current": {"selected": True, "text": "default", "value": "default"}, "options": [], "hide": 0,
         "regex": ""},
        query_var("job", "Job", "label_values(mmuscope_build_info, job)",
                  "Scrape jobs of mmuscope agents (job=\"mmuscope\" in the shipped scrape configs)."),
        query_var("node", "Node", 'label_values(mmuscope_build_info{job=~"$job"}, node)',
                  "Kubernetes nodes (the shipped ServiceMonitor copies the node name into node and instance); "
                  "empty where the scrape configuration sets no node label."),
        query_var("instance", "Host", 'label_values(mmuscope_build_info{job=~"$job", node=~"$node"}, instance)',
                  "Agents (one per host)."),
        query_var("namespace", "Namespace", f'label_values({cgroup_source}{{{HOST}}}, namespace)',
                  "Kubernetes namespace of the memory's owner (its pod's); host cgroups have none."),
        query_var("pod", "Pod", f'label_values({cgroup_source}{{{HOST}, namespace=~"$namespace"}}, pod)',
                  "Kubernetes pod of the memory's owner; host cgroups have none."),
        query_var("cgroup", "Cgroup",
                  f'label_values({cgroup_source}{{{HOST}, namespace=~"$namespace", pod=~"$pod"}}, cgroup)',
                  "Memory owner cgroups (path below the hierarchy root); other = beyond --max-cgroups."),
    ]}


def dashboard(uid, title, description, panels, tags=()):
    return {
        "uid": uid, "title": title, "description": description, "tags": ["mmuscope", "ebpf", *tags],
        "editable": False, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION, "version": 1,
        "time": {"from": "now-1h", "to": "now"}, "timezone": "browser", "refresh": "30s", "fiscalYearStartMonth": 0,
        "liveNow": False, "weekStart": "",
        "timepicker": {"refresh_intervals": ["15s", "30s", "1m", "5m", "15m"]},
        "templating": variables(),
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "links": [{"title": "mmuscope", "type": "dashboards", "tags": ["mmuscope"], "asDropdown": True,
                   "includeVars": True, "keepTime": True, "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "panels": panels,
    }


def fleet():
    L = Layout()
    inval = rate("mmuscope_invalidations_total")
    panels = [
        L.place(stat("Hosts reporting", "Agents Prometheus scraped successfully at the last scrape.", "none",
                     f"count(up{{{HOST}}} == 1) or vector(0)", BAD_AT_0), 4, 4),
        L.place(stat("Invalidations", "mmu_notifier invalidation brackets per second over the selected hosts and "
                     "cgroups.", "ops", f"sum({inval})", NEUTRAL), 5, 4),
        L.place(stat("Double notifications", "Secondary-TLB ranges invalidated again within one operation, per "
                     "second (fentry/kprobe modes).", "ops", f"sum({rate('mmuscope_double_notifications_total')})", NEUTRAL),
                5, 4),
        L.place(stat("Pinned fork copies", "Pages fork() copied eagerly because they may be DMA-pinned, per "
                     "second.", "ops", f"sum({rate('mmuscope_fork_pinned_page_copies_total')})", NEUTRAL), 5, 4),
        L.place(stat("Probe families missing", "Host × probe family pairs with no attach alternative in use "
                     "(0 is healthy; see the agent health dashboard).", "none",
                     f"count(max by (instance, probe) (mmuscope_probe_attached{{{HOST}}}) == 0) or vector(0)", BAD_ABOVE_0),
                5, 4),
        L.place(timeseries("Top hosts by invalidation rate", "The 10 hosts with the most invalidation brackets "
                           "per second.", "ops",
                           target(f"topk(10, sum by (instance) ({inval}))", "{{instance}}")), 12, 9),
        L.place(timeseries("Top cgroups by invalidation rate", "The 10 cgroups (any host) with the most "
                           "invalidation brackets per second; the memory's owner, not the thread that caused it.",
                           "ops", target(f"topk(10, sum by (instance, cgroup) ({inval}))", "{{instance}} {{cgroup}}")),
                12, 9),
        L.place(bargauge("Top cgroups by p99 latency", "The 10 cgroups with the slowest 99th percentile of "
                         "invalidate_range_start → end now (fentry/kprobe modes).", "s",
                         "topk(10, histogram_quantile(0.99, sum by (instance, cgroup, le) "
                         f"({rate('mmuscope_invalidation_duration_seconds_bucket')})))",
                         "{{instance}} {{cgroup}}"), 8, 9),
        L.place(timeseries("Top cgroups by double notifications", "The 10 cgroups with the most double "
                           "notifications per second.", "ops",
                           target(f"topk(10, sum by (instance, cgroup) ({rate('mmuscope_double_notifications_total')}))",
                                  "{{instance}} {{cgroup}}")), 8, 9),
        L.place(timeseries("Top cgroups by pinned fork copies", "The 10 cgroups whose forks copy the most "
                           "possibly-pinned memory, in bytes per second.", "Bps",
                           target(f"topk(10, sum by (instance, cgroup) ({rate('mmuscope_fork_pinned_copy_bytes_total')}))",
                                  "{{instance}} {{cgroup}}")), 8, 9),
        L.place(table("Hosts", "Kernel, secondary-TLB generation and agent version of every host.", "none",
                      f"mmuscope_build_info{{{HOST}}}",
                      {"excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}}), 24, 5),
    ]
    return dashboard("mmuscope-fleet", "mmuscope / fleet overview",
                     "Secondary-MMU invalidations across hosts: the busiest hosts and cgroups, slow and doubled "
                     "invalidations, eager fork copies.", panels, ("fleet",))


def host():
    L = Layout()
    hist = f"mmuscope_invalidation_duration_seconds_bucket{{{CG}}}"
    q = lambda p: f"histogram_quantile({p}, sum by (le) (rate({hist}{RATE})))"
    fork_note = " By the parent's owner cgroup."
    panels = [
        L.row("Invalidation brackets"),
        L.place(timeseries("Invalidations by event", "Invalidation brackets per second by mmu_notifier event type "
                           "(unknown in tracepoint mode).", "ops",
                           target(f"sum by (event) ({rate('mmuscope_invalidations_total')})", "{{event}}"),
                           stack=True), 12, 8),
        L.place(timeseries("Invalidations by cgroup", "Invalidation brackets per second by the memory's owner "
                           "cgroup, with its pod where it has one.", "ops",
                           target(f"sum by (cgroup, namespace, pod) ({rate('mmuscope_invalidations_total')})",
                                  "{{cgroup}} {{pod}}")), 12, 8),
        L.place(timeseries("Invalidations by cause", "Invalidation brackets per second by why they happened: "
                           "the caller (thp_split, reclaim, migration, numa, soft_dirty, userfaultfd, exit, and "
                           "ksm_cow with --probes.ksm-cow; fentry/kprobe modes) or else the task's context (its system call, page_fault, reclaim, a "
                           "kernel thread by name).", "ops",
                           target(f"sum by (cause) ({rate('mmuscope_invalidations_total')})", "{{cause}}"),
                           stack=True), 24, 8),
        L.place(heatmap("Latency heatmap", "Brackets per second by duration (log2 buckets, start entry → end "
                        "return; fentry/kprobe modes).", f"sum by (le) (rate({hist}{RATE}))"), 12, 9),
        L.place(timeseries("Latency p50 / p99", "Median and 99th percentile bracket duration, interpolated "
                           "inside log2 buckets.", "s", target(q(0.5), "p50"), target(q(0.99), "p99")), 12, 9),
        L.place(timeseries("Latency p99 by cause (whole host)", "99th percentile bracket duration by cause over all "
                           "cgroups: what a THP split, reclaim or migration costs the subscribers (fentry/kprobe "
                           "modes).", "s",
                           target("histogram_quantile(0.99, sum by (cause, le) "
                                  f"({rate('mmuscope_invalidation_cause_duration_seconds_bucket', HOST)}))",
                                  "{{cause}}")), 24, 8),
        L.place(timeseries("Blockable and non-blockable", "Brackets by whether the caller allowed the subscribers "
                           "to sleep (non-blockable: OOM reaper and other atomic callers).", "ops",
                           target(f"sum by (blockable) ({rate('mmuscope_invalidations_total')})", "{{blockable}}")),
                8, 8),
        L.place(timeseries("Started outside the owner", "Brackets on this cgroup's memory started by a kernel "
                           "thread (kswapd, kcompactd, khugepaged) or by a task of another cgroup (direct reclaim, "
                           "process_madvise), per second (fentry/kprobe modes).", "ops",
                           target(f"sum by (initiator) ({rate('mmuscope_cross_cgroup_invalidations_total')})",
                                  "{{initiator}}")), 8, 8),
        L.place(timeseries("Start failures and unmatched ends", "invalidate_range_start calls that failed (no end "
                           "follows) and ends whose start was not seen, per second.", "ops",
                           target(f"sum(rate(mmuscope_invalidation_start_failures_total{{{HOST}}}{RATE}))", "start failed"),
                           target(f"sum(rate(mmuscope_unmatched_bracket_ends_total{{{HOST}}}{RATE}))", "unmatched end")),
                8, 8),
        L.place(table("Cgroups", "Invalidations per second now, per host, cgroup (with its pod) and event.", "ops",
                      f"sum by (instance, cgroup, namespace, pod, container, event) "
                      f"({rate('mmuscope_invalidations_total')})",
                      {"excludeByName": {"Time": True}, "renameByName": {"Value": "per second"}}), 24, 7),
        L.row("Secondary TLB and double notifications"),
        L.place(timeseries("Secondary-TLB invalidations", "Secondary-TLB invalidations per second by scope "
                           "(range, full_mm) and context (bracket, gather, outside); only calls that reach a "
                           "subscriber implementing the callback (on 6.6+ IOMMU SVA, not KVM).", "ops",
                           target(f"sum by (scope, context) ({rate('mmuscope_secondary_tlb_invalidations_total')})",
                                  "{{scope}} / {{context}}")), 8, 8),
        L.place(timeseries("Double notifications by kind", "Ranges invalidated again within one operation, by "
                           "mechanism (end_after_in_lock, end_then_gather: before 6.6; overlapping_secondary_tlb: "
                           "6.6+, with an implementer of arch_invalidate_secondary_tlbs such as IOMMU SVA; "
                           "overlapping_brackets: start/end subscribers such as KVM invalidating one range twice in "
                           "one system call).",
                           "ops", target(f"sum by (kind) ({rate('mmuscope_double_notifications_total')})", "{{kind}}")),
                8, 8),
        L.place(timeseries("Redundant bytes and avoided repeats", "Bytes invalidated more than once per second by "
                           "mechanism; and invalidate_range_end calls with only_end, which skipped the repeat "
                           "(before 6.6).", "Bps",
                           target(f"sum by (kind) ({rate('mmuscope_redundant_invalidation_bytes_total')})", "{{kind}}"),
                           target(f"sum({rate('mmuscope_double_notifications_avoided_total')})", "avoided (ops/s)"),
                           overrides=[unit_of("B", "ops")]),
                8, 8),
        L.row("Subscribers"),
        L.place(timeseries("Notifier subscriptions", "Registered mmu_notifier and interval-notifier subscriptions "
                           "by subscriber kind (kvm, iommu, gpu, rdma, …), from the task-iterator inventory.", "short",
                           target(f"sum by (subscriber) (mmuscope_notifier_subscriptions{{{HOST}}})",
                                  "{{subscriber}}")), 8, 8),
        L.place(timeseries("Address spaces with pinned pages", "mms whose mm->pinned_vm is non-zero (io_uring "
                           "fixed buffers, RDMA, iommufd), by owner cgroup: their fork() copies pinned pages "
                           "eagerly.", "short",
                           target(f"sum by (cgroup) (mmuscope_pinned_mms{{{CG}}})", "{{cgroup}}")), 8, 8),
        L.place(timeseries("Subscriber callback p99", "99th percentile duration of each subscriber's "
                           "invalidate callbacks (fentry/kprobe modes).", "s",
                           target(f"histogram_quantile(0.99, sum by (le, subscriber, callback) "
                                  f"(rate(mmuscope_subscriber_callback_duration_seconds_bucket{{{HOST}}}{RATE})))", "{{subscriber}} {{callback}}")), 8, 8),
        L.row("GPU and RDMA subscribers (interval notifiers)"),
        L.place(timeseries("Invalidations by subscriber", "Invalidation brackets per second by the subscriber "
                           "kinds they reached (kvm, a GPU or RDMA driver's module, + when several; tracepoint mode: "
                           "kvm).", "ops",
                           target(f"sum by (subscriber) ({rate('mmuscope_invalidations_total')})", "{{subscriber}}"),
                           stack=True), 8, 8),
        L.place(timeseries("Bracket p99 by subscriber", "99th percentile bracket duration by the subscriber kinds "
                           "reached: whose invalidations are slow (fentry/kprobe modes).", "s",
                           target("histogram_quantile(0.99, sum by (subscriber, le) "
                                  f"({rate('mmuscope_invalidation_duration_seconds_bucket')}))", "{{subscriber}}")),
                8, 8),
        L.place(timeseries("Interval-notifier invalidations", "Brackets that intersect an interval notifier "
                           "(HMM mirrors of GPU drivers, RDMA On-Demand Paging), per second by owner cgroup "
                           "(fentry/kprobe modes).", "ops",
                           target(f"sum by (cgroup) ({rate('mmuscope_interval_invalidations_total')})",
                                  "{{cgroup}}")), 8, 8),
        L.place(timeseries("Reader waits, read collisions and -EBUSY", "Device-fault readers that waited for an "
                           "invalidation to end (mmu_interval_read_begin); read collisions: a reader began again on "
                           "a notifier invalidated since its previous begin (every driver retry is one, so retries "
                           "are at most this); hmm_range_fault calls that returned -EBUSY (the driver retries), per "
                           "second.", "ops",
                           target(f"sum({rate('mmuscope_interval_read_waits_total')})", "reader waits"),
                           target(f"sum({rate('mmuscope_interval_read_collisions_total')})", "read collisions"),
                           target(f"sum({rate('mmuscope_hmm_range_fault_busy_total')})", "-EBUSY")),
                12, 8),
        L.place(timeseries("Reader wait p99", "99th percentile time a device-fault reader waited for an "
                           "invalidation in progress.", "s",
                           target("histogram_quantile(0.99, sum by (le) "
                                  f"({rate('mmuscope_interval_read_wait_seconds_bucket')}))", "p99")), 12, 8),
        L.row("fork() copies of pinned pages"),
        L.place(timeseries("Pinned pages copied at fork", "Pages copied eagerly because they may be DMA-pinned, "
                           "and forks that did so, per second." + fork_note, "ops",
                           target(f"sum({rate('mmuscope_fork_pinned_page_copies_total')})", "pages"),
                           target(f"sum({rate('mmuscope_forks_with_pinned_pages_total')})", "forks")), 8, 8),
        L.place(timeseries("Bytes copied at fork", "Bytes of those eager copies per second." + fork_note, "Bps",
                           target(f"sum by (cgroup) ({rate('mmuscope_fork_pinned_copy_bytes_total')})", "{{cgroup}}")),
                8, 8),
        L.place(timeseries("THP splits at fork", "PMD-mapped huge pages split at fork because they may be pinned, "
                           "per second (fentry/kprobe modes)." + fork_note, "ops",
                           target(f"sum by (cgroup) ({rate('mmuscope_fork_pinned_thp_splits_total')})", "{{cgroup}}")),
                8, 8),
    ]
    return dashboard("mmuscope-host", "mmuscope / host and cgroup",
                     "One host (or a few) and its cgroups: invalidation latency, event types, secondary-TLB "
                     "invalidations, double notifications and eager fork copies.", panels, ("host",))


def agent():
    L = Layout()
    prog = lambda m: f"rate({m}{{{HOST}}}{RATE})"
    panels = [
        L.place(table("Probe plan", "The attach alternative in use per probe family and host (mode and kernel "
                      "functions or tracepoints); `mmuscope check` explains the others.", "none",
                      f"mmuscope_probe_attached{{{HOST}}} == 1",
                      {"excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True}}), 14, 8),
        L.place(table("Probe families not attached", "Families with no alternative in use (their metrics are "
                      "absent on that host).", "none", f"max by (instance, probe) (mmuscope_probe_attached{{{HOST}}}) == 0",
                      {"excludeByName": {"Time": True, "Value": True}}), 10, 8),
        L.place(timeseries("eBPF program CPU", "CPU time the kernel spent in each of the agent's programs "
                           "(1 = one core). Only with --bpf.run-stats (BPF_ENABLE_STATS, needs CAP_SYS_ADMIN at start; off by default because it slows every eBPF program on the host).", "percentunit",
                           target(f"sum by (instance, program) ({prog('mmuscope_bpf_program_run_seconds_total')})",
                                  "{{instance}} {{program}}")), 8, 8),
        L.place(timeseries("eBPF program cost per run", "Average run time of each program per invocation (only with --bpf.run-stats).", "s",
                           target(f"sum by (instance, program) ({prog('mmuscope_bpf_program_run_seconds_total')}) / "
                                  f"sum by (instance, program) ({prog('mmuscope_bpf_program_runs_total')})",
                                  "{{instance}} {{program}}")), 8, 8),
        L.place(timeseries("eBPF program runs", "Invocations of each program per second (only with --bpf.run-stats).", "ops",
                           target(f"sum by (instance, program) ({prog('mmuscope_bpf_program_runs_total')})",
                                  "{{instance}} {{program}}")), 8, 8),
        L.place(timeseries("Map fill", "Entries of each kernel aggregation map over its capacity "
                           "(--map.stats-entries); at 100% new keys are lost and counted below.", "percentunit",
                           target(f"max by (instance, map) (mmuscope_map_entries{{{HOST}}} / mmuscope_map_capacity{{{HOST}}})",
                                  "{{instance}} {{map}}")), 8, 8),
        L.place(timeseries("Lost updates and read errors", "Map updates refused because the map was full, "
                           "kernel reads that failed while attributing an event, and failed reads of a map by the "
                           "agent (that scrape failed), per second.", "ops",
                           target(f"sum by (instance, map) ({prog('mmuscope_map_update_errors_total')})",
                                  "{{instance}} full: {{map}}"),
                           target(f"sum by (instance) ({prog('mmuscope_probe_read_errors_total')})",
                                  "{{instance}} read errors"),
                           target(f"sum by (instance, map) ({prog('mmuscope_map_read_errors_total')})",
                                  "{{instance}} map read: {{map}}")), 8, 8),
        L.place(timeseries("Cgroups", "Cgroups with their own series (at most --max-cgroups) and cgroups folded "
                           "into cgroup=\"other\" per second.", "short",
                           target(f"max by (instance) (mmuscope_cgroups_tracked{{{HOST}}})", "{{instance}} tracked"),
                           target(f"sum by (instance) ({prog('mmuscope_cgroups_overflow_total')})",
                                  "{{instance}} overflow/s"),
                           overrides=[unit_of("B", "ops")]), 8, 8),
        L.place(timeseries("Scrape duration", "Time the agent spent reading the maps for a scrape, and the whole "
                           "scrape as Prometheus saw it.", "s",
                           target(f"max by (instance) (mmuscope_scrape_duration_seconds{{{HOST}}})", "{{instance}} agent"),
                           target(f"max by (instance) (scrape_duration_seconds{{{HOST}}})", "{{instance}} Prometheus")),
                8, 8),
        L.place(timeseries("Agent memory", "Resident memory of the agent process.", "bytes",
                           target(f"max by (instance) (process_resident_memory_bytes{{{HOST}}})", "{{instance}}")),
                8, 8),
        L.place(timeseries("Agent CPU", "CPU time of the agent process, user and system (1 = one core).",
                           "percentunit", target(f"sum by (instance) ({prog('process_cpu_seconds_total')})",
                                                 "{{instance}}")), 8, 8),
    ]
    return dashboard("mmuscope-agent", "mmuscope / agent health",
                     "The agents themselves: which probes attached in which mode, what the eBPF programs cost, "
                     "how full the kernel maps are, scrape time, memory and CPU.", panels, ("agent",))


DASHBOARDS = {"mmuscope-fleet.json": fleet, "mmuscope-host.json": host, "mmuscope-agent.json": agent}


def main(argv):
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        path = HERE / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"dashboards out of date: {', '.join(stale)}; run `python3 dashboards/generate.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
