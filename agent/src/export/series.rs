//! One scrape's metric families as plain rows that borrow their label values from the snapshot, the cgroup index and
//! the plan, so building a series allocates nothing (histograms: one box). The prometheus crate's object model cost
//! about ten allocations per series to build and as many frees after encoding: with 10k cgroups, ~60 % of a
//! collection (BENCHMARKS.md). [`super::text`] writes these rows in the same text format.

use std::cmp::Ordering;

use mmuscope_abi::BracketStats;

use crate::cgroups::CgroupLabels;

/// Most labels a family has besides the cgroup ones (`build_info` has four).
pub const MAX_OWN: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// As in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A metric family as declared next to the code that builds it: what `# HELP` and `# TYPE` say, its labels, and
/// so its row in `docs/metrics.md` (every file lists its own in a `METRICS` slice, gathered in [`super::METRICS`]).
#[derive(Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    /// The series carry the four cgroup labels first.
    pub per_cgroup: bool,
    /// Names of the family's own labels (after the cgroup ones).
    pub labels: &'static [&'static str],
    /// One or two sentences; what each mode sees belongs in `docs/probes.md`.
    pub help: &'static str,
}

impl Metric {
    /// A family whose series carry the cgroup labels, then `labels`.
    pub const fn per_cgroup(
        name: &'static str,
        kind: Kind,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        Self::new(name, kind, true, labels, help)
    }

    /// A family without cgroup labels.
    pub const fn plain(name: &'static str, kind: Kind, labels: &'static [&'static str], help: &'static str) -> Self {
        Self::new(name, kind, false, labels, help)
    }

    const fn new(
        name: &'static str,
        kind: Kind,
        per_cgroup: bool,
        labels: &'static [&'static str],
        help: &'static str,
    ) -> Self {
        assert!(labels.len() <= MAX_OWN, "a metric with more than MAX_OWN labels");
        Self { name, kind, per_cgroup, labels, help }
    }
}

/// A sample's value. Counts stay integers until written, so that summing the series that share a label set is exact.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Count(u64),
    Float(f64),
    /// Log2 nanosecond buckets, written as cumulative seconds (see [`super::histogram`]).
    Histogram(Box<BracketStats>),
}

impl Value {
    /// Adds `other` (a series with the same labels: several cgroup ids can share a label set, e.g. `other`).
    fn merge(&mut self, other: Value) {
        match (self, other) {
            (Value::Count(a), Value::Count(b)) => *a = a.saturating_add(b),
            (Value::Float(a), Value::Float(b)) => *a += b,
            (Value::Histogram(a), Value::Histogram(b)) => a.merge(&b),
            (a, b) => debug_assert!(false, "merging {a:?} with {b:?}"),
        }
    }
}

/// One series: its label values (the family has the names) and its value.
#[derive(Clone, Debug)]
pub struct Series<'a> {
    pub cgroup: Option<CgroupLabels<'a>>,
    /// The family's own label values, in [`Family::own`] order; unused slots are empty.
    pub own: [&'a str; MAX_OWN],
    pub value: Value,
}

impl Series<'_> {
    /// The order of the exposition: by label values in label order, as the prometheus crate's registry sorts.
    fn cmp_labels(&self, other: &Self) -> Ordering {
        self.cgroup.cmp(&other.cgroup).then_with(|| self.own.cmp(&other.own))
    }
}

/// One metric family of a scrape.
#[derive(Debug)]
pub struct Family<'a> {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The series carry the four cgroup labels first.
    pub per_cgroup: bool,
    /// Names of the family's own labels (after the cgroup ones).
    pub own: &'static [&'static str],
    series: Vec<Series<'a>>,
    /// Positions in `series` in exposition order, one per label set (the others' values merged into it); `None`
    /// until asked for, or after a series was added.
    order: Option<Vec<u32>>,
}

impl<'a> Family<'a> {
    /// An empty family of `metric`.
    pub fn new(metric: &'static Metric) -> Self {
        let Metric { name, kind, per_cgroup, labels, help } = *metric;
        Self { name, help, kind, per_cgroup, own: labels, series: Vec::new(), order: None }
    }

    /// Adds a series; one with the same labels as an earlier one is summed with it.
    pub fn add(&mut self, cgroup: Option<CgroupLabels<'a>>, own: &[&'a str], value: Value) {
        debug_assert_eq!(cgroup.is_some(), self.per_cgroup, "{}: cgroup labels", self.name);
        debug_assert_eq!(own.len(), self.own.len(), "{}: label count", self.name);
        let mut values = [""; MAX_OWN];
        values[..own.len()].copy_from_slice(own);
        self.series.push(Series { cgroup, own: values, value });
        self.order = None;
    }

    /// A family with one unlabelled series.
    pub fn single(metric: &'static Metric, value: Value) -> Self {
        let mut f = Self::new(metric);
        f.add(None, &[], value);
        f
    }

    /// The series in exposition order, equal label sets merged.
    pub fn series(&mut self) -> impl ExactSizeIterator<Item = &Series<'a>> {
        let order = self.order.get_or_insert_with(|| merged_order(&mut self.series));
        order.iter().map(|i| &self.series[*i as usize])
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// All label names of a series, cgroup ones included (for the metrics reference).
    pub fn label_names(&self) -> Vec<&'static str> {
        let cgroup = if self.per_cgroup { CgroupLabels::NAMES.as_slice() } else { &[] };
        cgroup.iter().chain(self.own).copied().collect()
    }

    /// The value of the series with these own label values (and, for per-cgroup families, this `cgroup` label),
    /// for tests.
    #[cfg(test)]
    pub fn value(&mut self, cgroup: Option<&str>, own: &[&str]) -> Option<&Value> {
        let per_cgroup = self.per_cgroup;
        self.series()
            .find(|s| s.cgroup.map(|c| c.cgroup) == cgroup.filter(|_| per_cgroup) && s.own[..own.len()] == *own)
            .map(|s| &s.value)
    }
}

/// Sorts positions rather than the series (a series is ~150 bytes; moving them was a third of the sort's time at
/// 10k cgroups, measured), by the cgroup's rank first: within one index that is an integer comparison.
fn merged_order(series: &mut [Series<'_>]) -> Vec<u32> {
    let mut keyed: Vec<(u32, u32)> =
        series.iter().enumerate().map(|(i, s)| (s.cgroup.map_or(0, |c| c.rank()), i as u32)).collect();
    keyed.sort_unstable_by(|(rank_a, a), (rank_b, b)| {
        rank_a.cmp(rank_b).then_with(|| series[*a as usize].cmp_labels(&series[*b as usize]))
    });
    let mut order: Vec<u32> = Vec::with_capacity(keyed.len());
    for (_, i) in keyed {
        match order.last() {
            Some(&kept) if series[kept as usize].cmp_labels(&series[i as usize]) == Ordering::Equal => {
                let value = std::mem::replace(&mut series[i as usize].value, Value::Count(0));
                series[kept as usize].value.merge(value);
            }
            _ => order.push(i),
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cg(path: &str) -> CgroupLabels<'_> {
        CgroupLabels::new(path, "", "", "")
    }

    #[test]
    fn series_sharing_labels_are_summed_and_sorted_by_label_values() {
        static METRIC: Metric = Metric::per_cgroup("mmuscope_invalidations_total", Kind::Counter, &["event"], "");
        let mut f = Family::new(&METRIC);
        f.add(Some(cg("/b")), &["clear"], Value::Count(1));
        f.add(Some(cg("/a")), &["unmap"], Value::Count(2));
        f.add(Some(cg("/a b")), &["clear"], Value::Count(4));
        f.add(Some(cg("/a")), &["clear"], Value::Count(8));
        f.add(Some(cg("/b")), &["clear"], Value::Count(16));
        let rows: Vec<(&str, &str, Value)> =
            f.series().map(|s| (s.cgroup.unwrap().cgroup, s.own[0], s.value.clone())).collect();
        // By value, not by rendered text: "/a" sorts before "/a b" although `"` > ` `.
        assert_eq!(
            rows,
            [
                ("/a", "clear", Value::Count(8)),
                ("/a", "unmap", Value::Count(2)),
                ("/a b", "clear", Value::Count(4)),
                ("/b", "clear", Value::Count(17)),
            ]
        );
    }

    #[test]
    fn histograms_merge_their_buckets() {
        static METRIC: Metric =
            Metric::per_cgroup("mmuscope_invalidation_duration_seconds", Kind::Histogram, &["event"], "");
        let mut f = Family::new(&METRIC);
        f.add(Some(cg("/a")), &["clear"], Value::Histogram(Box::new(BracketStats::of(&[100, 3000]))));
        f.add(Some(cg("/a")), &["clear"], Value::Histogram(Box::new(BracketStats::of(&[5000]))));
        let Some(Value::Histogram(h)) = f.value(Some("/a"), &["clear"]) else { panic!("no histogram") };
        assert_eq!((h.count, h.sum_ns), (3, 8100));
    }
}
