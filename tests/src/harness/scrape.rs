//! Scraping the agent over HTTP and reducing `/metrics` to what the tests compare.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::promtext::Exposition;

/// The invalidation counter family.
pub const INVALIDATIONS: &str = "mmuscope_invalidations_total";

/// A blocking HTTP client bound to one agent.
pub struct Scraper {
    base: String,
    http: ureq::Agent,
}

impl Scraper {
    pub fn new(base_url: &str) -> Self {
        Self::with_timeout(base_url, Duration::from_secs(10))
    }

    /// [`Self::new`] with another per-request timeout (the soak, on hosts with tens of thousands of cgroups).
    pub fn with_timeout(base_url: &str, timeout: Duration) -> Self {
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false) // the callers want the code, e.g. /readyz 503 while attaching
            .build()
            .into();
        Self { base: base_url.trim_end_matches('/').to_owned(), http }
    }

    /// The agent's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` → (status, body).
    pub fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.base);
        let mut resp = self.http.get(&url).call().with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().with_context(|| format!("reading body of {url}"))?;
        Ok((status, body))
    }

    /// `GET /metrics`, which must answer 200 with a well-formed exposition.
    pub fn metrics(&self) -> Result<Exposition> {
        let (status, body) = self.get("/metrics")?;
        if status != 200 {
            bail!("GET /metrics: HTTP {status}: {}", body.trim());
        }
        Exposition::parse(&body).context("parsing /metrics")
    }
}

/// Scrapes every 100 ms until `settled` holds for a scrape or `timeout` passes, and returns the last scrape: the
/// caller compares it exactly either way (a timeout shows as the mismatch). Instead of a fixed sleep: as fast as the
/// agent is, never too short.
pub fn scrape_until(scraper: &Scraper, timeout: Duration, settled: impl Fn(&Exposition) -> bool) -> Result<Exposition> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let e = scraper.metrics()?;
        if settled(&e) || std::time::Instant::now() >= deadline {
            return Ok(e);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `name` summed over all other labels, per `cgroup` label value.
pub fn counter_by_cgroup(e: &Exposition, name: &str) -> BTreeMap<String, f64> {
    e.sum_by(name, "cgroup")
}

/// Cgroups whose value differs between two per-cgroup maps (absent = 0), as `(cgroup, before, after)`.
pub fn changed_cgroups(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64, f64)> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get(k).copied().unwrap_or(0.0), after.get(k).copied().unwrap_or(0.0));
            (b != a).then(|| (k.clone(), b, a))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_cgroups_treats_absent_as_zero() {
        let before = BTreeMap::from([("/a".to_owned(), 5.0), ("/b".to_owned(), 1.0)]);
        let after = BTreeMap::from([("/a".to_owned(), 5.0), ("/b".to_owned(), 2.0), ("/c".to_owned(), 3.0)]);
        assert_eq!(changed_cgroups(&before, &after), [("/b".to_owned(), 1.0, 2.0), ("/c".to_owned(), 0.0, 3.0)]);
        assert!(changed_cgroups(&after, &after).is_empty());
        let zero = BTreeMap::from([("/z".to_owned(), 0.0)]);
        assert!(changed_cgroups(&BTreeMap::new(), &zero).is_empty());
    }
}
