//! Builders for Prometheus metric families from plain rows, so the collector reads as a list
//! of "this metric has these rows".

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};

/// Label names and values of one series, in the family's label order.
pub type Labels = Vec<(&'static str, String)>;

fn labels(l: Labels) -> Vec<LabelPair> {
    l.into_iter()
        .map(|(n, v)| {
            let mut p = LabelPair::default();
            p.set_name(n.to_string());
            p.set_value(v);
            p
        })
        .collect()
}

fn family(name: &str, help: &str, t: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(name.to_string());
    f.set_help(help.to_string());
    f.set_field_type(t);
    f.set_metric(metrics);
    f
}

pub fn counter(name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) -> MetricFamily {
    let metrics = rows
        .into_iter()
        .map(|(l, v)| {
            let mut c = Counter::default();
            c.set_value(v);
            let mut m = Metric::from_label(labels(l));
            m.set_counter(c);
            m
        })
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
}

pub fn gauge(name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) -> MetricFamily {
    let metrics = rows
        .into_iter()
        .map(|(l, v)| {
            let mut g = Gauge::default();
            g.set_value(v);
            let mut m = Metric::from_label(labels(l));
            m.set_gauge(g);
            m
        })
        .collect();
    family(name, help, MetricType::GAUGE, metrics)
}

/// One histogram series: cumulative `(upper bound, count)` pairs (without `+Inf`), sum, count.
pub struct HistogramRow {
    pub labels: Labels,
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

pub fn histogram(name: &str, help: &str, rows: impl IntoIterator<Item = HistogramRow>) -> MetricFamily {
    let metrics = rows
        .into_iter()
        .map(|r| {
            let mut h = Histogram::default();
            h.set_sample_count(r.count);
            h.set_sample_sum(r.sum);
            h.set_bucket(
                r.buckets
                    .into_iter()
                    .map(|(le, c)| {
                        let mut b = Bucket::default();
                        b.set_upper_bound(le);
                        b.set_cumulative_count(c);
                        b
                    })
                    .collect(),
            );
            let mut m = Metric::from_label(labels(r.labels));
            m.set_histogram(h);
            m
        })
        .collect();
    family(name, help, MetricType::HISTOGRAM, metrics)
}
