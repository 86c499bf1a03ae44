//! `/api/v1/slow` for one scenario: the guest agent runs with `--slow.min-duration=0s`, so every bracket is recorded;
//! the records of each process the truth names must be exactly its brackets, with the truth's causes (the caller
//! hooks are attached in fentry/kprobe modes).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use mmuscope_tests::harness::Scraper;
use mmuscope_tests::truth::GroundTruth;
use serde_json::Value;

/// The API's largest `limit`: a scenario with more brackets from one process cannot be compared, which fails it.
const LIMIT: u64 = 1000;

/// Mismatches between the slow log and the truth (empty when they agree).
pub fn problems(scraper: &Scraper, truth: &GroundTruth) -> Vec<String> {
    match compare(scraper, truth) {
        Ok(p) => p,
        Err(e) => vec![format!("/api/v1/slow: {e:#}")],
    }
}

fn compare(scraper: &Scraper, truth: &GroundTruth) -> Result<Vec<String>> {
    // pid → cause → brackets, from the truth's sources.
    let mut want: BTreeMap<u32, BTreeMap<String, u64>> = BTreeMap::new();
    for s in &truth.invalidations.sources {
        let cause = s.hook_cause.clone().or_else(|| s.context_cause.clone()).unwrap_or_else(|| "unknown".into());
        *want.entry(s.initiator_pid.unwrap_or(truth.pid)).or_default().entry(cause).or_default() += s.count;
    }
    want.entry(truth.pid).or_default();
    let mut problems = Vec::new();
    for (pid, causes) in want {
        let total: u64 = causes.values().sum();
        if total > LIMIT {
            // The API cannot return them all, so the comparison could not be made: a failure, not a note (the
            // matrix keeps each scenario's brackets per process below the limit).
            problems.push(format!("/api/v1/slow?pid={pid}: {total} brackets exceed limit={LIMIT}, not comparable"));
            continue;
        }
        let (status, body) = scraper.get(&format!("/api/v1/slow?threshold_us=0&limit={LIMIT}&pid={pid}"))?;
        anyhow::ensure!(status == 200, "answered {status}: {body}");
        let v: Value = serde_json::from_str(&body).context("not JSON")?;
        anyhow::ensure!(v["available"] == true, "not available: {}", v["note"]);
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        for b in v["brackets"].as_array().into_iter().flatten() {
            *got.entry(b["cause"].as_str().unwrap_or("?").to_owned()).or_default() += 1;
        }
        let causes: BTreeMap<String, u64> = causes.into_iter().filter(|(_, n)| *n > 0).collect();
        if got != causes {
            problems.push(format!("/api/v1/slow?pid={pid}: brackets by cause {got:?}, ground truth {causes:?}"));
        }
    }
    Ok(problems)
}
