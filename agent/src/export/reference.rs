//! The metrics reference (`docs/metrics.md`), generated from the same family builders and help texts the registry
//! serves, run on a small synthetic snapshot so that every family shows its type and label names.
//!
//! `cargo xtask docs` writes it (through the hidden `mmuscope metrics-reference` command); a unit test fails when the
//! committed file is out of date. The families built from the per-cgroup maps come from the same function the
//! exporter calls ([`snapshot_families`]), run on [`Snapshot::sample`] (one entry per sample key of every map in
//! `crate::cgroup_maps`): a new family needs its [`Metric`] in its file's `METRICS` and no edit here.

use std::{fmt::Write, time::Instant};

use mmuscope_abi::BracketStats;
use prometheus::core::Collector;

use super::{
    Attached, Context, METRICS, agent, programs,
    series::{Family, Metric},
    snapshot_families, subscribers,
};
use crate::{
    bpfstats::ProgramRun,
    cgroups::CgroupLabels,
    collect::Snapshot,
    kernel::{EventNames, Generation},
    probes::{
        Mode, PlanReport, Status, families,
        report::{AlternativeReport, Capabilities, FamilyReport},
    },
};

/// A plan with the `brackets` family attached (also the base of other tests' plans).
pub(super) fn sample_report() -> PlanReport {
    let alternative = AlternativeReport {
        name: "fentry",
        mode: Mode::Fentry,
        status: Status::Attached,
        reason: String::new(),
        targets: vec!["__mmu_notifier_invalidate_range_start"],
        hooks: vec![],
        degraded: "",
    };
    PlanReport {
        kernel_release: String::new(),
        btf_path: String::new(),
        generation: Generation::Unknown,
        generation_description: "",
        capabilities: Capabilities {
            trampolines: Ok(()),
            kprobes: Ok(()),
            reattach: Ok(()),
            cause_context: Ok(()),
            tracefs: Err("not probed".into()),
        },
        families: vec![FamilyReport {
            id: families::brackets::ID,
            description: "",
            required: true,
            alternatives: vec![alternative],
        }],
        on_demand: Vec::new(),
    }
}

/// What the reference shows of a family.
struct Row {
    name: String,
    type_name: &'static str,
    labels: Vec<String>,
    help: String,
    /// It has a sample series.
    #[cfg_attr(not(test), allow(dead_code))]
    sampled: bool,
}

impl Row {
    fn of(mut f: Family<'_>) -> Self {
        let sampled = f.series().len() > 0;
        let labels = f.label_names().iter().map(|l| l.to_string()).collect();
        Self { name: f.name.to_string(), type_name: f.kind.as_str(), labels, help: f.help.to_string(), sampled }
    }

    fn of_process(f: &prometheus::proto::MetricFamily) -> Self {
        use prometheus::proto::MetricType;
        let type_name = match f.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        let first = f.get_metric().first();
        let labels = first.map(|m| m.get_label().iter().map(|l| l.name().to_string()).collect()).unwrap_or_default();
        Self { name: f.name().to_string(), type_name, labels, help: f.help().to_string(), sampled: first.is_some() }
    }
}

/// Every family the agent can export, in [`METRICS`] order, then the `process_*` families.
fn all_families() -> Vec<Row> {
    let snap = Snapshot::sample();
    let cgroup = |_: u32, _: u64| CgroupLabels::new("/", "", "", "");
    let events = EventNames::from_pairs(vec![(0, "unmap".into())]);
    let build = agent::BuildInfo { version: "", revision: "", kernel: String::new(), generation: "" };
    let inventory = subscribers::sample_inventory();
    let callback = BracketStats { count: 1, sum_ns: 1000, ..Default::default() };
    let callbacks = [(("kvm".to_string(), "invalidate_range_start"), callback)].into();
    let names = crate::cgroups::CgroupNames::new(Default::default(), Default::default());
    let runs = [ProgramRun { program: "p".into(), run_time: Default::default(), run_count: 1, recursion_misses: 1 }];
    let report = sample_report();
    let symbol = |_: u64| "amdgpu_hmm_invalidate_gfx";
    let subscriber = |_: u32| crate::subscribers::KVM;
    let context =
        Context { cgroup: &cgroup, symbol: &symbol, subscriber: &subscriber, events: &events, page_size: 4096 };
    let mut out = snapshot_families(&snap, &context, &Attached::ALL);
    out.extend(subscribers::families(&inventory, &cgroup));
    out.push(subscribers::callback_family(&callbacks));
    out.extend(agent::families(&snap, 16, &report, &build, Instant::now()));
    out.push(agent::map_read_errors(&[("bracket_stats", 0)]));
    out.extend(agent::cgroup_families(&names));
    out.extend(programs::families(&runs, true));
    let rank = |name: &str| declared().position(|m| m.name == name).unwrap_or(usize::MAX);
    out.sort_by_key(|f| rank(f.name));
    let mut rows: Vec<Row> = out.into_iter().map(Row::of).collect();
    let mut process = prometheus::process_collector::ProcessCollector::for_self().collect();
    process.sort_by(|a, b| a.name().cmp(b.name()));
    rows.extend(process.iter().map(Row::of_process));
    rows
}

/// Every declared family, in [`METRICS`] order.
fn declared() -> impl Iterator<Item = &'static Metric> {
    METRICS.iter().flat_map(|m| m.iter().copied())
}

/// The Markdown text of `docs/metrics.md`.
pub fn metrics_reference() -> String {
    let mut s = String::new();
    s.push_str(
        "# Metrics reference\n\n\
         <!-- Generated by `cargo xtask docs` from the agent's metric families; do not edit by hand. -->\n\n\
         Every family the agent serves on `/metrics` (default `--web.telemetry-path`), with its type, its labels and\n\
         its help text. Counters and histograms are read from the kernel maps at scrape time; nothing is accumulated\n\
         in user space.\n\n\
         **Cgroup labels.** Every cgroup-keyed family carries the same four labels: `cgroup` (path below the\n\
         hierarchy root, e.g. `/system.slice/libvirtd.service`), and `namespace`, `pod`, `container` for Kubernetes\n\
         layouts (systemd and cgroupfs drivers; containerd, CRI-O and Docker ids; names from the kubelet's\n\
         `/var/log/pods`, `/var/log/containers` and `/var/lib/kubelet/pods`, else the pod UID and short container\n\
         id). Outside Kubernetes the three are empty, so a family's label set never changes (Prometheus stores an\n\
         empty label as absent). `cgroup=\"unknown\"`: the owner could not be resolved; `cgroup=\"other\"`: the\n\
         aggregate of cgroups beyond `--max-cgroups` (counted by `mmuscope_cgroups_overflow_total`). Series of a\n\
         deleted cgroup disappear `--cgroups.deleted-ttl` after the deletion is noticed.\n\n\
         **Histograms** use log2 nanosecond buckets converted to seconds, cumulative and edge-correct (a value of\n\
         exactly 2^k ns counts in `le` = 2^k ns), with `_sum` and `_count`.\n\n",
    );
    s.push_str("| metric | type | labels | description |\n|---|---|---|---|\n");
    for f in all_families() {
        let labels: Vec<String> = f.labels.iter().map(|l| format!("`{l}`")).collect();
        let help = f.help.replace('|', "\\|");
        let _ = writeln!(s, "| `{}` | {} | {} | {} |", f.name, f.type_name, labels.join(", "), help);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_documented_with_a_sample() {
        let fams = all_families();
        for m in declared() {
            let f = fams.iter().find(|f| f.name == m.name);
            let f = f.unwrap_or_else(|| {
                panic!("{} is declared but no builder produced it (export/mod.rs, reference.rs)", m.name)
            });
            assert!(f.sampled, "{}: no series from the sample snapshot (ByCgroup::sample_keys)", m.name);
            assert_eq!(f.help, m.help);
        }
        for f in &fams {
            if !f.name.starts_with("process_") {
                let n = declared().filter(|m| m.name == f.name).count();
                assert_eq!(n, 1, "{} must be in exactly one file's METRICS (export/mod.rs lists the files)", f.name);
            }
        }
    }

    #[test]
    fn help_texts_are_short() {
        // One or two sentences; what each mode and kernel sees is in docs/probes.md.
        for m in declared() {
            assert!(!m.help.is_empty() && m.help.len() <= 240, "{}: help of {} characters", m.name, m.help.len());
        }
    }

    #[test]
    fn docs_metrics_md_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == metrics_reference(),
            "{path} is out of date with the agent's metric families: run `cargo xtask docs` and commit the result"
        );
    }
}
