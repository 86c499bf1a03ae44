//! Host checks of the subscriber inventory: a held workload (`--hold`) must appear in `/api/v1/subscribers` with
//! what its ground truth says it registered or pinned, the gauges must count it, and both must drop it once it exits.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use super::{HostEnv, Scraper, held::HeldWorkload};
use crate::promtext::Exposition;

const HOLD_TIMEOUT: Duration = Duration::from_secs(60);
/// The inventory is re-taken at most once a second in tracepoint mode.
const SEEN_TIMEOUT: Duration = Duration::from_secs(10);
const SUBSCRIPTIONS: &str = "mmuscope_notifier_subscriptions";
const PINNED_MMS: &str = "mmuscope_pinned_mms";
const HAS_PINNED_MMS: &str = "mmuscope_has_pinned_mms";

fn inventory(scraper: &Scraper) -> Result<Value> {
    let (status, body) = scraper.get("/api/v1/subscribers")?;
    ensure!(status == 200, "/api/v1/subscribers answered {status}: {body}");
    let v: Value = serde_json::from_str(&body).context("/api/v1/subscribers is not JSON")?;
    ensure!(v["available"] == true, "inventory not available: {body}");
    ensure!(v["error"].is_null(), "inventory sweep failed: {}", v["error"]);
    Ok(v)
}

fn entry(v: &Value, pid: u32) -> Option<Value> {
    v["mms"].as_array()?.iter().find(|m| m["pid"] == pid).cloned()
}

/// Polls the API until `pid` is listed (`want`) with its callbacks named (a callback first met is named off the
/// request path: `symbols_pending` until then), or not listed (`!want`); returns the last entry seen.
fn wait_for(scraper: &Scraper, pid: u32, want: bool) -> Result<Option<Value>> {
    let deadline = Instant::now() + SEEN_TIMEOUT;
    loop {
        let v = inventory(scraper)?;
        let named = v["symbols_pending"] == false;
        let e = entry(&v, pid);
        if (e.is_some() == want && (named || !want)) || Instant::now() >= deadline {
            return Ok(e);
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn gauge(e: &Exposition, family: &str, label: &str, value: &str) -> f64 {
    e.sum_by(family, label).get(value).copied().unwrap_or(0.0)
}

/// `multi-vm --vms K --hold`: one entry for the workload's pid, kind kvm, K subscriptions with KVM's callbacks, in
/// the workload's cgroup; while held and after exit the kvm gauge equals the kvm subscriptions the API lists (other
/// VMs on the host, if any, are in both); after exit the entry is gone.
pub fn kvm_case(env: &HostEnv, scraper: &Scraper, cgroup_parent: &str, name: &str, vms: u32) -> Result<()> {
    let vms_arg = vms.to_string();
    let args = ["multi-vm", "--iterations", "1", "--vms", &vms_arg, "--hold"];
    let held = HeldWorkload::spawn(
        &env.workload_bin,
        args.iter().copied().chain(["--cgroup-parent", cgroup_parent, "--cgroup-name", name]),
        HOLD_TIMEOUT,
    )?;
    let pid = held.pid();
    let seen = wait_for(scraper, pid, true)?;
    let held_gauge = kvm_gauge_equal_to_listing(scraper, "while held", pid, vms as usize);
    let truth = held.release()?;
    let held_gauge = held_gauge?;
    let seen = seen.with_context(|| format!("pid {pid} never appeared in /api/v1/subscribers"))?;
    println!("multi-vm --vms {vms} held: {seen}");
    ensure!(truth.pid == pid && truth.vms == vms, "truth describes another run: pid {} vms {}", truth.pid, truth.vms);
    ensure!(seen["kinds"] == serde_json::json!(["kvm"]), "kinds {} (expected [\"kvm\"])", seen["kinds"]);
    let subs = seen["subscriptions"].as_array().context("subscriptions")?;
    ensure!(
        subs.len() == truth.vms as usize,
        "{} subscriptions listed, the workload registered {}",
        subs.len(),
        truth.vms
    );
    for s in subs {
        let start =
            s["callbacks"].as_array().and_then(|c| c.iter().find(|c| c["callback"] == "invalidate_range_start"));
        let symbol = start.and_then(|c| c["symbol"].as_str()).unwrap_or_default();
        ensure!(symbol.starts_with("kvm_mmu_notifier_invalidate_range_start"), "start callback {symbol:?} in {s}");
    }
    let label = truth.cgroups.attributed().path.as_str();
    ensure!(seen["cgroup"] == label, "cgroup {} (the workload ran in {label})", seen["cgroup"]);
    // Exact in two parts: the host-wide gauge equals the kvm subscriptions the API lists (other VMs on this host, a
    // number this test cannot know, are in both), of which exactly the workload's VMs are listed for its pid.
    println!("{SUBSCRIPTIONS}{{subscriber=\"kvm\"}} while held: {held_gauge}, {} of them the workload's", truth.vms);

    let gone = wait_for(scraper, pid, false)?;
    ensure!(gone.is_none(), "pid {pid} still listed after it exited: {gone:?}");
    kvm_gauge_equal_to_listing(scraper, "after exit", pid, 0).map(|_| ())
}

/// The kvm subscription gauge, once it equals the number of kvm subscriptions `/api/v1/subscribers` lists, of which
/// exactly `own` are `pid`'s. Both are host-wide and come from the same inventory; two reads may straddle a re-sweep,
/// so it retries a little.
fn kvm_gauge_equal_to_listing(scraper: &Scraper, when: &str, pid: u32, own: usize) -> Result<f64> {
    let mut last = String::new();
    for _ in 0..10 {
        let mms = inventory(scraper)?["mms"].as_array().cloned().unwrap_or_default();
        let kvm_of = |m: &Value| {
            m["subscriptions"].as_array().map_or(0, |subs| subs.iter().filter(|s| s["kind"] == "kvm").count())
        };
        let listed: usize = mms.iter().map(kvm_of).sum();
        let listed_own: usize = mms.iter().filter(|m| m["pid"] == pid).map(kvm_of).sum();
        let kvm = gauge(&scraper.metrics()?, SUBSCRIPTIONS, "subscriber", "kvm");
        println!(
            "{when}: {SUBSCRIPTIONS}{{subscriber=\"kvm\"}} = {kvm}, kvm subscriptions listed = {listed}, \
             {listed_own} of pid {pid}"
        );
        if kvm == listed as f64 && listed_own == own {
            return Ok(kvm);
        }
        last = format!("gauge {kvm} vs {listed} listed, {listed_own} of pid {pid} (expected {own})");
        thread::sleep(Duration::from_millis(300));
    }
    anyhow::bail!("{when}: the kvm gauge does not match the API: {last}")
}

/// `fork-pinned --pages N --hold`: the workload's mm is listed with N pinned pages and the has-pinned flag, and
/// counted once in `pinned_mms` and `has_pinned_mms` of its cgroup; after exit it is in neither.
pub fn pinned_case(env: &HostEnv, scraper: &Scraper, cgroup_parent: &str, name: &str, pages: u64) -> Result<()> {
    let pages_arg = pages.to_string();
    let args = ["fork-pinned", "--pages", &pages_arg, "--hold"];
    let held = HeldWorkload::spawn(
        &env.workload_bin,
        args.iter().copied().chain(["--cgroup-parent", cgroup_parent, "--cgroup-name", name]),
        HOLD_TIMEOUT,
    )?;
    let pid = held.pid();
    let seen = wait_for(scraper, pid, true)?;
    let metrics = scraper.metrics()?;
    let page_size = inventory(scraper)?["page_size"].as_u64().context("page_size")?;
    let truth = held.release()?;
    let seen = seen.with_context(|| format!("pid {pid} never appeared in /api/v1/subscribers"))?;
    println!("fork-pinned --pages {pages} held: {seen}");
    let fork = truth.fork.as_ref().context("fork-pinned truth without its fork part")?;
    let label = truth.cgroups.attributed().path.as_str();
    ensure!(seen["cgroup"] == label, "cgroup {} (the workload ran in {label})", seen["cgroup"]);
    let pinned = seen["pinned_bytes"].as_u64().context("pinned_bytes")?;
    ensure!(
        pinned == fork.pinned_pages * page_size,
        "pinned_bytes {pinned}, the workload pinned {} pages of {page_size} bytes",
        fork.pinned_pages
    );
    ensure!(seen["kinds"] == serde_json::json!([]), "kinds {} for an mm without notifiers", seen["kinds"]);
    // Pinning through io_uring (FOLL_PIN) set the has-pinned flag: fork copied because of it.
    ensure!(seen["has_pinned"] == true, "has_pinned {} for an mm that pinned pages", seen["has_pinned"]);
    for family in [PINNED_MMS, HAS_PINNED_MMS] {
        let held_gauge = gauge(&metrics, family, "cgroup", label);
        println!("{family}{{cgroup={label:?}}} while held: {held_gauge}");
        ensure!(held_gauge == 1.0, "{family}{{cgroup={label:?}}} = {held_gauge} while the workload held its pin");
    }

    let gone = wait_for(scraper, pid, false)?;
    ensure!(gone.is_none(), "pid {pid} still listed after it exited: {gone:?}");
    let metrics = scraper.metrics()?;
    for family in [PINNED_MMS, HAS_PINNED_MMS] {
        let after = gauge(&metrics, family, "cgroup", label);
        println!("{family}{{cgroup={label:?}}} after exit: {after}");
        ensure!(after == 0.0, "{family}{{cgroup={label:?}}} = {after} after the workload exited");
    }
    Ok(())
}

const FORK_COPIES: &str = "mmuscope_fork_pinned_page_copies_total";
const FORK_UNOBSERVED: &str = "mmuscope_fork_unobserved_total";
/// The log line of an attach asked for by a fork (`probes::arming`).
pub const ATTACHED_BY_A_FORK: &str = "forked while it was detached";

/// Scrapes until `reached` holds (or the timeout), then once more after a quiet second: the caller compares that
/// last scrape exactly, so a late extra count shows.
fn settled(scraper: &Scraper, reached: impl Fn(&Exposition) -> bool) -> Result<Exposition> {
    crate::harness::scrape::scrape_until(scraper, SEEN_TIMEOUT, reached)?;
    thread::sleep(Duration::from_secs(1));
    scraper.metrics()
}

/// Whether the fork-copy hook is attached, and how many listed mms have the has-pinned flag (one request, which
/// may sweep and so attach or detach the hook first).
fn fork_copy_hook(scraper: &Scraper) -> Result<(bool, usize)> {
    let v = inventory(scraper)?;
    let attached = v["fork_copy_hook"]["attached"].as_bool().context("fork_copy_hook.attached")?;
    let flagged = v["mms"].as_array().map_or(0, |mms| mms.iter().filter(|m| m["has_pinned"] == true).count());
    Ok((attached, flagged))
}

/// Polls until the hook is attached (`want`) or detached; returns what the last request said.
fn wait_for_hook(scraper: &Scraper, want: bool) -> Result<(bool, usize)> {
    let deadline = Instant::now() + SEEN_TIMEOUT;
    loop {
        let seen = fork_copy_hook(scraper)?;
        if seen.0 == want || Instant::now() >= deadline {
            return Ok(seen);
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// The fork-copy hook follows the has-pinned flag (`probes::arming`):
/// 1. detached while no mm has the flag;
/// 2. `fork-pinned --hold` pins and forks at once, with no request to the agent in between (so no sweep): that
///    fork is counted once in `fork_unobserved_total` and copies nothing in `fork_pinned_page_copies_total`, and
///    the hook is attached (by the fork's request, and by the sweeps that see the held pin);
/// 3. detached again once that process has exited;
/// 4. `fork-pinned --agent-url` waits for the hook after its pin: its copies count exactly, no unobserved fork.
pub fn arming_case(env: &HostEnv, scraper: &Scraper, cgroup_parent: &str, name: &str, pages: u64) -> Result<()> {
    let (attached, flagged) = fork_copy_hook(scraper)?;
    println!("fork-copy hook before: attached {attached}, {flagged} mm(s) with the has-pinned flag");
    ensure!(
        flagged == 0,
        "{flagged} mm(s) on this host already have the has-pinned flag: the detached state cannot be tested"
    );
    ensure!(!attached, "the fork-copy hook is attached while no mm has the has-pinned flag");

    let pages_arg = pages.to_string();
    let cgroup = ["--cgroup-parent", cgroup_parent, "--cgroup-name", name];
    let before = scraper.metrics()?;
    let args = ["fork-pinned", "--pages", &pages_arg, "--hold"];
    let held = HeldWorkload::spawn(&env.workload_bin, args.iter().copied().chain(cgroup), HOLD_TIMEOUT)?;
    let held_state = wait_for_hook(scraper, true);
    let truth = held.release()?;
    let (attached, flagged) = held_state?;
    println!("fork-copy hook while the pinned process was held: attached {attached}, {flagged} flagged mm(s)");
    ensure!(attached, "the fork-copy hook stayed detached while a process with pinned pages was alive");
    let fork = truth.fork.as_ref().context("fork-pinned truth without its fork part")?;
    ensure!(fork.copied_pages > 0, "the workload's fork copied nothing: no unobserved copies to miss");
    let label = truth.cgroups.attributed().path.as_str();
    let after = settled(scraper, |m| gauge(m, FORK_UNOBSERVED, "cgroup", label) >= 1.0)?;
    let grew = |family: &str| gauge(&after, family, "cgroup", label) - gauge(&before, family, "cgroup", label);
    println!(
        "fork before the agent saw the pin ({} pages copied by the kernel): unobserved +{}, copies +{}",
        fork.copied_pages,
        grew(FORK_UNOBSERVED),
        grew(FORK_COPIES)
    );
    ensure!(
        grew(FORK_UNOBSERVED) == 1.0,
        "{FORK_UNOBSERVED}{{cgroup={label:?}}} grew by {}, expected 1",
        grew(FORK_UNOBSERVED)
    );
    ensure!(
        grew(FORK_COPIES) == 0.0,
        "{FORK_COPIES}{{cgroup={label:?}}} grew by {} with the hook detached",
        grew(FORK_COPIES)
    );

    let (attached, flagged) = wait_for_hook(scraper, false)?;
    println!("fork-copy hook after the pinned process exited: attached {attached}, {flagged} flagged mm(s)");
    ensure!(!attached, "the fork-copy hook stayed attached after the last pinned process exited");

    let name_waiting = format!("{name}-waits");
    let cgroup = ["--cgroup-parent", cgroup_parent, "--cgroup-name", &name_waiting];
    let base = scraper.base().to_owned();
    let args = ["fork-pinned", "--pages", &pages_arg, "--agent-url", &base];
    let before = scraper.metrics()?;
    let truth = crate::harness::workload::run_workload(&env.workload_bin, [&args[..], &cgroup[..]].concat())?;
    let fork = truth.fork.as_ref().context("fork-pinned truth without its fork part")?;
    let label = truth.cgroups.attributed().path.as_str();
    let expected = fork.copied_pages as f64;
    let after = settled(scraper, |m| gauge(m, FORK_COPIES, "cgroup", label) >= expected)?;
    let grew = |family: &str| gauge(&after, family, "cgroup", label) - gauge(&before, family, "cgroup", label);
    println!(
        "fork after waiting for the hook: copies expected {expected}, observed {}; unobserved +{}",
        grew(FORK_COPIES),
        grew(FORK_UNOBSERVED)
    );
    ensure!(
        grew(FORK_COPIES) == expected,
        "{FORK_COPIES}{{cgroup={label:?}}} grew by {}, truth {expected}",
        grew(FORK_COPIES)
    );
    ensure!(grew(FORK_UNOBSERVED) == 0.0, "{FORK_UNOBSERVED}{{cgroup={label:?}}} grew by {}", grew(FORK_UNOBSERVED));
    Ok(())
}
