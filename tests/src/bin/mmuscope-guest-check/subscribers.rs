//! Subscriber checks of one scenario: the inventory while a `--hold` workload keeps its VMs or its pin (one `kvm`
//! subscription per VM of its truth, one `mmuscope_mirror` for the test module's secondary-TLB subscriber, under its
//! pid, and the has-pinned flag when it pinned; which of them list a `change_pte` callback: KVM's where the kernel's
//! `struct mmu_notifier_ops` still has the member — 5.10 and 6.1 virt/kvm/kvm_main.c `kvm_mmu_notifier_ops`
//! `.change_pte = kvm_mmu_notifier_change_pte`, removed with the member in 6.10 — and the test module's never, its
//! ops set no `change_pte`), and the KVM callback histogram (`invalidate_range_start` count = the KVM start callbacks
//! the truth knows: one per VM per bracket, which is what `kvm_unmap_hva_range` counts).

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mmuscope_tests::harness::Scraper;
use mmuscope_tests::promtext::Exposition;
use mmuscope_tests::truth::{GroundTruth, KVM_KIND, MIRROR_KIND};
use serde_json::Value;

/// Sweeps are on demand; under TCG the API answers slowly (a request may even time out: retried).
const SEEN_TIMEOUT: Duration = Duration::from_secs(60);
const CALLBACK_COUNT: &str = "mmuscope_subscriber_callback_duration_seconds_count";

/// What `/api/v1/subscribers` listed for the held workload's pid.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub kinds: Vec<String>,
    pub subscriptions: u64,
    /// The has-pinned flag: set for `fork-pinned`, clear for a KVM scenario (a wrong bit number reads another flag).
    pub has_pinned: bool,
    /// Kinds of the subscriptions that list a `change_pte` callback, sorted (one entry per subscription).
    pub change_pte: Vec<String>,
}

/// Polls the API until the pid is listed (or the timeout); `None` if it never was.
pub fn listed(scraper: &Scraper, pid: u32) -> Result<Option<Listed>> {
    let deadline = Instant::now() + SEEN_TIMEOUT;
    loop {
        let (status, body) = match scraper.get("/api/v1/subscribers") {
            Ok(r) => r,
            Err(e) if Instant::now() < deadline => {
                println!("GET /api/v1/subscribers failed ({e:#}); retrying");
                continue;
            }
            Err(e) => return Err(e),
        };
        anyhow::ensure!(status == 200, "/api/v1/subscribers answered {status}: {body}");
        let v: Value = serde_json::from_str(&body).context("/api/v1/subscribers is not JSON")?;
        let entry = v["mms"].as_array().and_then(|mms| mms.iter().find(|m| m["pid"] == pid));
        // A callback first met by this request is named off the request path (kallsyms takes seconds under TCG):
        // its subscription reads `unknown` until then, so wait for the names rather than compare that.
        let pending = v["symbols_pending"].as_bool().context("symbols_pending in /api/v1/subscribers")?;
        if let Some(e) = entry.filter(|_| !pending || Instant::now() >= deadline) {
            let kinds = e["kinds"].as_array().into_iter().flatten().filter_map(|k| k.as_str().map(str::to_owned));
            let subscriptions = e["subscriptions"].as_array().map_or(0, |s| s.len() as u64);
            let has_pinned = e["has_pinned"].as_bool().context("has_pinned in /api/v1/subscribers")?;
            let mut change_pte: Vec<String> = e["subscriptions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["callbacks"].as_array().into_iter().flatten().any(|c| c["callback"] == "change_pte"))
                .map(|s| s["kind"].as_str().unwrap_or("?").to_owned())
                .collect();
            change_pte.sort();
            return Ok(Some(Listed { kinds: kinds.collect(), subscriptions, has_pinned, change_pte }));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Problems of the inventory against the truth; `ops_change_pte`: whether the kernel's `struct mmu_notifier_ops` has
/// `change_pte` (BTF).
pub fn inventory_problems(listed: &Option<Listed>, truth: &GroundTruth, ops_change_pte: bool) -> Vec<String> {
    let has_pinned = truth.fork.as_ref().is_some_and(|f| f.pinned_pages > 0);
    // The agent names a subscriber by the module its ops live in: `kvm`, and the test module's secondary-TLB
    // subscriber `mmuscope_mirror`; kinds come sorted.
    let mut kinds: Vec<String> = Vec::new();
    if truth.vms > 0 {
        kinds.push(KVM_KIND.into());
    }
    // The module's secondary-TLB subscriber, or its interval notifier beside a VM (one subscription of the mm's
    // interval notifiers).
    let module = u64::from(truth.tlb_subscriber.is_some() || truth.interval.is_some());
    if module > 0 {
        kinds.push(MIRROR_KIND.into());
    }
    kinds.sort();
    // Each VM's KVM subscription implements `change_pte` where the op exists; the test module's never does.
    let change_pte = if ops_change_pte { vec![KVM_KIND.to_owned(); truth.vms as usize] } else { Vec::new() };
    let want = Listed { kinds, subscriptions: u64::from(truth.vms) + module, has_pinned, change_pte };
    match listed {
        None => vec![format!("pid {} never appeared in /api/v1/subscribers", truth.pid)],
        Some(l) if *l != want => {
            vec![format!("/api/v1/subscribers listed {l:?} for pid {}, expected {want:?}", truth.pid)]
        }
        Some(_) => Vec::new(),
    }
}

/// `subscriber_callback_duration_seconds_count{subscriber="kvm",callback="invalidate_range_start"}`.
pub fn kvm_start_callbacks(e: &Exposition) -> u64 {
    callbacks_timed(e, KVM_KIND, "invalidate_range_start")
}

/// `subscriber_callback_duration_seconds_count{subscriber,callback}`.
pub fn callbacks_timed(e: &Exposition, subscriber: &str, callback: &str) -> u64 {
    e.samples_named(CALLBACK_COUNT)
        .filter(|s| {
            s.labels.get("subscriber").map(String::as_str) == Some(subscriber)
                && s.labels.get("callback").map(String::as_str) == Some(callback)
        })
        .map(|s| s.value as u64)
        .sum()
}
