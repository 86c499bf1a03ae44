//! What `top` shows: the API's cgroup list turned into rows with rates (from the difference between two polls).

use std::{collections::HashMap, time::Instant};

use serde::Deserialize;

/// The fields of `/api/v1/cgroups` that `top` uses.
#[derive(Clone, Debug, Deserialize)]
pub struct ApiCgroup {
    pub id: u64,
    pub hierarchy: String,
    pub cgroup: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub pod: String,
    #[serde(default)]
    pub container: String,
    pub invalidations: u64,
    pub latency: Option<ApiLatency>,
    pub double_notifications: Option<u64>,
    pub fork_pinned_page_copies: Option<u64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ApiLatency {
    pub p99_seconds: Option<f64>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ApiList {
    pub total: u64,
    pub cgroups: Vec<ApiCgroup>,
}

/// One line of the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub name: String,
    /// `namespace/pod/container`, empty outside Kubernetes.
    pub workload: String,
    /// Invalidations per second since the previous poll (`None` on the first).
    pub rate: Option<f64>,
    pub total: u64,
    pub p99: Option<f64>,
    pub double: Option<u64>,
    pub fork_copies: Option<u64>,
}

/// Order of the rows; `s` cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sort {
    Rate,
    Total,
    P99,
    Double,
    ForkCopies,
}

impl Sort {
    pub fn next(self) -> Self {
        match self {
            Sort::Rate => Sort::Total,
            Sort::Total => Sort::P99,
            Sort::P99 => Sort::Double,
            Sort::Double => Sort::ForkCopies,
            Sort::ForkCopies => Sort::Rate,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Sort::Rate => "rate",
            Sort::Total => "total",
            Sort::P99 => "p99",
            Sort::Double => "double notifications",
            Sort::ForkCopies => "fork copies",
        }
    }
}

#[derive(Default)]
pub struct State {
    previous: HashMap<(u64, String), u64>,
    previous_at: Option<Instant>,
    pub rows: Vec<Row>,
    pub total: u64,
}

impl State {
    /// Takes a new poll taken at `now`.
    pub fn update(&mut self, list: ApiList, now: Instant) {
        let elapsed = self.previous_at.map(|t| now.saturating_duration_since(t).as_secs_f64()).filter(|s| *s > 0.0);
        let mut next = HashMap::new();
        self.rows = list
            .cgroups
            .into_iter()
            .map(|c| {
                let key = (c.id, c.hierarchy.clone());
                let rate = elapsed.map(|secs| {
                    let before = self.previous.get(&key).copied().unwrap_or(0);
                    c.invalidations.saturating_sub(before) as f64 / secs
                });
                next.insert(key, c.invalidations);
                let workload =
                    if c.pod.is_empty() { String::new() } else { format!("{}/{}/{}", c.namespace, c.pod, c.container) };
                Row {
                    name: c.cgroup,
                    workload,
                    rate,
                    total: c.invalidations,
                    p99: c.latency.and_then(|l| l.p99_seconds),
                    double: c.double_notifications,
                    fork_copies: c.fork_pinned_page_copies,
                }
            })
            .collect();
        self.previous = next;
        self.previous_at = Some(now);
        self.total = list.total;
    }

    pub fn sort(&mut self, by: Sort) {
        let key = |r: &Row| -> f64 {
            match by {
                Sort::Rate => r.rate.unwrap_or(0.0),
                Sort::Total => r.total as f64,
                Sort::P99 => r.p99.unwrap_or(-1.0),
                Sort::Double => r.double.map_or(-1.0, |n| n as f64),
                Sort::ForkCopies => r.fork_copies.map_or(-1.0, |n| n as f64),
            }
        };
        self.rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then(b.total.cmp(&a.total)).then(a.name.cmp(&b.name)));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn list(items: &[(u64, &str, u64)]) -> ApiList {
        ApiList {
            total: items.len() as u64,
            cgroups: items
                .iter()
                .map(|(id, name, n)| ApiCgroup {
                    id: *id,
                    hierarchy: "memory".into(),
                    cgroup: name.to_string(),
                    namespace: String::new(),
                    pod: String::new(),
                    container: String::new(),
                    invalidations: *n,
                    latency: None,
                    double_notifications: None,
                    fork_pinned_page_copies: None,
                })
                .collect(),
        }
    }

    #[test]
    fn rates_from_two_polls() {
        let mut s = State::default();
        let t0 = Instant::now();
        s.update(list(&[(1, "/a", 100), (2, "/b", 10)]), t0);
        assert!(s.rows.iter().all(|r| r.rate.is_none()));
        s.update(list(&[(1, "/a", 100), (2, "/b", 30), (3, "/c", 4)]), t0 + Duration::from_secs(2));
        s.sort(Sort::Rate);
        let got: Vec<(&str, Option<f64>)> = s.rows.iter().map(|r| (r.name.as_str(), r.rate)).collect();
        assert_eq!(got, [("/b", Some(10.0)), ("/c", Some(2.0)), ("/a", Some(0.0))]);
        s.sort(Sort::Total);
        assert_eq!(s.rows[0].name, "/a");
        assert_eq!(Sort::ForkCopies.next(), Sort::Rate);
    }
}
