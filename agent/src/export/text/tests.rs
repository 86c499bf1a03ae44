//! The writer against the prometheus crate's registry and `TextEncoder`, which produced `/metrics` before: the
//! same rows, aggregated by label set as the old builders did, must give the same bytes.

use std::collections::BTreeMap;

use mmuscope_abi::BracketStats;
use prometheus::{
    Encoder, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{self, MetricFamily, MetricType},
};

use super::*;
use crate::export::{
    agent, brackets, histogram, programs,
    series::{Family, Metric},
    subscribers,
};

/// One test series: cgroup label values (per-cgroup families), own label values, value.
type Row = (Option<[&'static str; 4]>, Vec<&'static str>, Value);

/// A family as declared (name, type, labels, help) and its test series.
struct Spec {
    metric: &'static Metric,
    rows: Vec<Row>,
}

fn ours(spec: &Spec) -> Family<'static> {
    let mut f = Family::new(spec.metric);
    for (cgroup, own, value) in &spec.rows {
        let cgroup =
            cgroup.map(|[cgroup, namespace, pod, container]| CgroupLabels::new(cgroup, namespace, pod, container));
        f.add(cgroup, own, value.clone());
    }
    f
}

/// The family as the old builders made it: rows summed per label set in a BTreeMap, then one `Metric` each.
fn theirs(spec: &Spec) -> MetricFamily {
    let mut by_labels: BTreeMap<Vec<(&str, String)>, Value> = BTreeMap::new();
    for (cgroup, own, value) in &spec.rows {
        let mut labels: Vec<(&str, String)> = Vec::new();
        if let Some(c) = cgroup {
            labels.extend(CgroupLabels::NAMES.iter().zip(c).map(|(n, v)| (*n, v.to_string())));
        }
        labels.extend(spec.metric.labels.iter().zip(own).map(|(n, v)| (*n, v.to_string())));
        match by_labels.get_mut(&labels) {
            Some(Value::Count(n)) => {
                *n += match value {
                    Value::Count(v) => *v,
                    _ => unreachable!(),
                }
            }
            Some(Value::Float(n)) => {
                *n += match value {
                    Value::Float(v) => *v,
                    _ => unreachable!(),
                }
            }
            Some(Value::Histogram(h)) => h.merge(match value {
                Value::Histogram(v) => v,
                _ => unreachable!(),
            }),
            None => {
                by_labels.insert(labels, value.clone());
            }
        }
    }
    let metrics = by_labels
        .into_iter()
        .map(|(labels, value)| {
            let pairs = labels
                .into_iter()
                .map(|(n, v)| {
                    let mut p = proto::LabelPair::default();
                    p.set_name(n.to_string());
                    p.set_value(v);
                    p
                })
                .collect();
            let mut m = proto::Metric::from_label(pairs);
            let number = |v: &Value| match v {
                Value::Count(n) => *n as f64,
                Value::Float(f) => *f,
                Value::Histogram(_) => unreachable!(),
            };
            match (spec.metric.kind, &value) {
                (Kind::Counter, v) => {
                    let mut c = proto::Counter::default();
                    c.set_value(number(v));
                    m.set_counter(c);
                }
                (Kind::Gauge, v) => {
                    let mut g = proto::Gauge::default();
                    g.set_value(number(v));
                    m.set_gauge(g);
                }
                (Kind::Histogram, Value::Histogram(s)) => {
                    let mut h = proto::Histogram::default();
                    h.set_sample_count(s.count);
                    h.set_sample_sum(s.sum_ns as f64 / 1e9);
                    h.set_bucket(
                        histogram::cumulative_seconds(s)
                            .map(|(le, c)| {
                                let mut b = proto::Bucket::default();
                                b.set_upper_bound(le);
                                b.set_cumulative_count(c);
                                b
                            })
                            .collect(),
                    );
                    m.set_histogram(h);
                }
                (Kind::Histogram, _) => unreachable!(),
            }
            m
        })
        .collect();
    let mut f = MetricFamily::default();
    f.set_name(spec.metric.name.to_string());
    f.set_help(spec.metric.help.to_string());
    f.set_field_type(match spec.metric.kind {
        Kind::Counter => MetricType::COUNTER,
        Kind::Gauge => MetricType::GAUGE,
        Kind::Histogram => MetricType::HISTOGRAM,
    });
    f.set_metric(metrics);
    f
}

/// Hands fixed families to a registry, as the exporter did.
struct Fixed(Vec<MetricFamily>, Vec<Desc>);

impl Collector for Fixed {
    fn desc(&self) -> Vec<&Desc> {
        self.1.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.clone()
    }
}

fn through_registry(families: Vec<MetricFamily>) -> String {
    let registry = Registry::new();
    registry.register(Box::new(Fixed(families, Vec::new()))).unwrap();
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

fn hist(values: &[u64]) -> Value {
    Value::Histogram(Box::new(BracketStats::of(values)))
}

fn cg(path: &'static str) -> Option<[&'static str; 4]> {
    Some([path, "", "", ""])
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            metric: &brackets::INVALIDATIONS,
            rows: vec![
                (cg("/b"), vec!["clear", "madvise", "true", "kvm"], Value::Count(1)),
                (cg("/a b"), vec!["clear", "madvise", "true", "kvm"], Value::Count(2)),
                (cg("/a"), vec!["clear", "madvise", "true", "kvm"], Value::Count(3)),
                (cg("/a-b"), vec!["unmap", "munmap", "false", "kvm+mmuscope_mirror"], Value::Count(1 << 53)),
                (cg("/a\"q\\b\nc"), vec!["unknown", "other", "unknown", "kvm"], Value::Count((1 << 53) + 1)),
                (cg("/b"), vec!["clear", "madvise", "true", "kvm"], Value::Count(4)), // summed with the first row
                (cg("/zäöü"), vec!["clear", "fork", "false", "kvm"], Value::Count(u64::MAX)),
                (
                    Some(["/kubepods/pod", "default", "web-0", "nginx"]),
                    vec!["clear", "reclaim", "true", "kvm"],
                    Value::Count(0),
                ),
                (
                    Some(["/kubepods/pod", "default", "web-0", ""]),
                    vec!["clear", "reclaim", "true", "kvm"],
                    Value::Count(9),
                ),
                (cg("other"), vec!["clear", "madvise", "true", "kvm"], Value::Count(5)),
                (cg("other"), vec!["clear", "madvise", "true", "kvm"], Value::Count(6)),
            ],
        },
        Spec {
            metric: &brackets::DURATION,
            rows: vec![
                (cg("/a"), vec!["clear", "kvm"], hist(&[100, 3000, 1 << 40])),
                (cg("/"), vec!["unmap", "kvm"], hist(&[])),
                (cg("/a"), vec!["clear", "kvm"], hist(&[256, 257, 1 << 20])),
            ],
        },
        Spec {
            metric: &subscribers::CALLBACK_DURATION,
            rows: vec![(None, vec!["kvm", "invalidate_range_start"], hist(&[5000]))],
        },
        Spec {
            metric: &agent::BUILD_INFO,
            rows: vec![(None, vec!["0.1.0", "abc", "6.18.0-x", "arch_invalidate_secondary_tlbs"], Value::Count(1))],
        },
        Spec { metric: &agent::SCRAPE_DURATION, rows: vec![(None, vec![], Value::Float(0.012_345_678_9))] },
        Spec {
            metric: &programs::RUN_SECONDS,
            rows: vec![
                (None, vec!["z"], Value::Float(1e21)),
                (None, vec!["a"], Value::Float(1e-9)),
                (None, vec!["m"], Value::Float(0.1 + 0.2)),
            ],
        },
        Spec { metric: &subscribers::PINNED_MMS, rows: vec![] },
    ]
}

#[test]
fn writes_what_the_prometheus_crate_wrote() {
    let specs = specs();
    let expected = through_registry(specs.iter().map(theirs).collect());
    let mut out = Vec::new();
    write(&mut out, specs.iter().map(ours).collect(), &[]);
    let got = String::from_utf8(out).unwrap();
    assert!(expected.contains("le=\"+Inf\"") && expected.contains("\\\""), "the cases cover escapes and +Inf");
    assert_eq!(got, expected);
}

#[test]
fn encoded_families_are_merged_in_name_order() {
    let one = |name: &'static str| {
        Family::single(Box::leak(Box::new(Metric::plain(name, Kind::Gauge, &[], ""))), Value::Count(1))
    };
    let encoded = |name: &str| Encoded { name: name.to_string(), text: format!("{name} 2\n").into_bytes() };
    let mut out = Vec::new();
    write(
        &mut out,
        vec![one("mmuscope_b"), one("mmuscope_a")],
        &[encoded("a_first"), encoded("mmuscope_ab"), encoded("z_last")],
    );
    let names: Vec<&str> = std::str::from_utf8(&out)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(names, ["a_first", "mmuscope_a", "mmuscope_ab", "mmuscope_b", "z_last"]);
}

#[test]
fn decimals_are_written_as_display_writes_them() {
    for n in [0, 1, 9, 10, 99, 100, 12_345, u64::from(u32::MAX), 1 << 53, u64::MAX] {
        let mut out = Vec::new();
        decimal(&mut out, n);
        assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
    }
}
