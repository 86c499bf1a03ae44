//! `/api/v1/slow` for one scenario: the guest agent runs with `--slow.min-duration=0s`, so every bracket is recorded;
//! the records of each process the truth names must be exactly its brackets, with the truth's causes (the caller
//! hooks are attached in fentry/kprobe modes). Each record carries its kernel stack: those of a system-call cause
//! ([`SYSCALL_CAUSES`]) must pass through that system call's entry (`__x64_sys_madvise`, `__arm64_sys_madvise`, or
//! the `process_`/`pkey_` variant), and no frame may be a raw address.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use mmuscope_tests::harness::Scraper;
use mmuscope_tests::truth::GroundTruth;
use serde_json::Value;

/// Causes that are one system call each: a record with one of them has a stack through `…_sys_<cause>`.
const SYSCALL_CAUSES: &[&str] = &["madvise", "munmap", "mprotect"];

/// The API's largest `limit`: a scenario with more brackets from one process cannot be compared, which fails it.
const LIMIT: u64 = 1000;
/// How long a `/api/v1/slow` request may take before the check gives up on the agent.
const SLOW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

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
        // Symbolizing up to LIMIT records of 64 frames reads the agent's kallsyms copy (172k symbols on 6.12): seconds
        // for a debug build under TCG, over the scraper's 10 s once (6.12 multi-vm). Not a speed check: a longer limit.
        let slow_scraper = Scraper::with_timeout(scraper.base(), SLOW_TIMEOUT);
        let (status, body) = slow_scraper.get(&format!("/api/v1/slow?threshold_us=0&limit={LIMIT}&pid={pid}"))?;
        anyhow::ensure!(status == 200, "answered {status}: {body}");
        let v: Value = serde_json::from_str(&body).context("not JSON")?;
        anyhow::ensure!(v["available"] == true, "not available: {}", v["note"]);
        let mut got: BTreeMap<String, u64> = BTreeMap::new();
        let (mut syscall, mut through, mut shown) = (0, 0, false);
        for b in v["brackets"].as_array().into_iter().flatten() {
            let cause = b["cause"].as_str().unwrap_or("?");
            *got.entry(cause.to_owned()).or_default() += 1;
            let frames: Vec<&str> = b["stack"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if let Some(raw) = frames.iter().find(|f| f.starts_with("0x")) {
                problems.push(format!("/api/v1/slow?pid={pid}: a raw address in a stack: {raw}"));
            }
            if SYSCALL_CAUSES.contains(&cause) {
                syscall += 1;
                let entries = ["", "process_", "pkey_"].map(|p| format!("_sys_{p}{cause}"));
                if frames.iter().any(|f| entries.iter().any(|e| f.ends_with(e.as_str()))) {
                    through += 1;
                }
                if !shown {
                    // One stack per process, in full, for the log.
                    println!("  /api/v1/slow?pid={pid}: a {cause} bracket's stack: {}", frames.join(" <- "));
                    shown = true;
                }
            }
        }
        if syscall > 0 {
            println!(
                "  /api/v1/slow?pid={pid}: {through} of {syscall} system-call brackets' stacks pass through the call"
            );
        }
        if through != syscall {
            problems.push(format!(
                "/api/v1/slow?pid={pid}: {through} of {syscall} system-call brackets' stacks pass through the call"
            ));
        }
        let causes: BTreeMap<String, u64> = causes.into_iter().filter(|(_, n)| *n > 0).collect();
        if got != causes {
            problems.push(format!("/api/v1/slow?pid={pid}: brackets by cause {got:?}, ground truth {causes:?}"));
        }
    }
    Ok(problems)
}
