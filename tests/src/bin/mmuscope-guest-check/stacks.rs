//! `/api/v1/stacks` during a scenario (fentry/kprobe modes), against the ground truth and the counters:
//!
//! * `kvm-madvise` (JSON): the invalidation stacks of the workload's cgroup that pass through the madvise system call
//!   total the truth's madvise brackets, and all its invalidation stacks its brackets (before 5.16 in kprobe mode
//!   every invalidation stack ends at the bracket hook's own kretprobe trampoline instead: see `madvise`); the
//!   double-notification stacks of each kind total the truth's doubles of that kind on this kernel's API and the
//!   increase of `mmuscope_double_notifications_total{kind}`; every `end_then_gather` stack passes through the zap
//!   (`zap_page_range_single`, 6.1 mm/memory.c:1786-1795; `zap_page_range` on 5.10, which `madvise_dontneed_single_vma`
//!   called until 6.1's commit 21b85b09527c; both exist in 5.10's BTF, so either frame is the zap) and the TLB-gather flush that repeats `_end`'s call
//!   (`tlb_finish_mmu`, whose `tlb_flush_mmu_tlbonly` is inline, include/asm-generic/tlb.h:447) into
//!   `__mmu_notifier_invalidate_range`. A function the agent traces itself (`tlb_finish_mmu`, `dup_mmap`) shows twice
//!   in a stack around its BPF trampoline on 6.1, and not at all on 6.12 (its unwinder skips the frame of a function
//!   entered through its fentry/fexit trampoline), so no check relies on such a frame;
//! * `fork-pinned` (SVG, parsed as XML): the flame graph is well-formed, and the events whose stacks pass through
//!   each frame of the fork path (`copy_process`, `copy_page_range`; `dup_mmap` between them is traced by `fork_copies`,
//!   see above) and through the workload's cgroup
//!   each total the truth's copied pages, as does the whole graph (no other cgroup copied).
//!
//! The capture is armed before the workload starts and must outlast its work (checked); what the workload does after
//! its hold point (teardown) is not asserted on.

use std::collections::BTreeMap;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use mmuscope_tests::harness::Scraper;
use mmuscope_tests::truth::{DoubleKind, GroundTruth, SecondaryTlbApi};
use quick_xml::events::Event;
use serde_json::Value;

use crate::families;
use crate::record::Comparison;

/// Capture length: the workload's work under TCG takes 1–3 s (results.json of the last runs).
const SECONDS: u64 = 10;
/// Time given to the request to arm the capture before the workload starts.
const ARM_DELAY: Duration = Duration::from_secs(2);
/// Frames every fork-copy stack must pass through.
const FORK_PATH: &[&str] = &["copy_process", "copy_page_range"];
/// Frames every `end_then_gather` stack must pass through (see the module docs); `a|b`: either.
const END_THEN_GATHER_PATH: &[&str] =
    &["zap_page_range_single|zap_page_range", "tlb_finish_mmu", "__mmu_notifier_invalidate_range"];

/// What a scenario's capture checks.
#[derive(Clone, Copy)]
enum Kind {
    Madvise,
    ForkPinned,
}

/// A capture running in a thread.
pub struct Capture {
    kind: Kind,
    started: Instant,
    handle: JoinHandle<Result<(u16, String)>>,
}

impl Capture {
    /// Starts the capture of scenario `name`, if it has one, and waits [`ARM_DELAY`].
    pub fn start(scraper: &Scraper, name: &str) -> Option<Self> {
        let (kind, path) = match name {
            "kvm-madvise" => (Kind::Madvise, format!("/api/v1/stacks?seconds={SECONDS}&format=json")),
            "fork-pinned" => (Kind::ForkPinned, format!("/api/v1/stacks?seconds={SECONDS}&kind=fork_copy&format=svg")),
            _ => return None,
        };
        let base = scraper.base().to_string();
        let started = Instant::now();
        let handle = thread::spawn(move || Scraper::with_timeout(&base, Duration::from_secs(SECONDS + 60)).get(&path));
        thread::sleep(ARM_DELAY);
        Some(Self { kind, started, handle })
    }

    /// Call when the workload's work is done (its hold point or its exit): that must be inside the capture.
    pub fn work_done(&self) -> Result<()> {
        let took = self.started.elapsed();
        ensure!(
            took + Duration::from_millis(500) < Duration::from_secs(SECONDS),
            "the workload's work ended {took:?} after the stack request started, too close to the {SECONDS} s capture"
        );
        Ok(())
    }

    /// Waits for the answer and compares it; mismatches as problems (empty when all agree).
    pub fn problems(
        self,
        truth: &GroundTruth,
        api: SecondaryTlbApi,
        comparisons: &[Comparison],
    ) -> (Vec<String>, Vec<String>) {
        let mut lines = Vec::new();
        let result = self.handle.join().map_err(|_| anyhow::anyhow!("stack request thread panicked")).and_then(|r| {
            let (status, body) = r?;
            ensure!(status == 200, "GET /api/v1/stacks: HTTP {status}: {body}");
            match self.kind {
                Kind::Madvise => madvise(&body, truth, api, comparisons, &mut lines),
                Kind::ForkPinned => fork_svg(&body, truth, &mut lines),
            }
        });
        match result {
            Ok(p) => (p, lines),
            Err(e) => (vec![format!("/api/v1/stacks: {e:#}")], lines),
        }
    }
}

/// Whether `/proc/kallsyms` names `symbol` (a function of the running kernel).
fn kallsyms_has(symbol: &str) -> bool {
    std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|text| text.lines().any(|l| l.split_whitespace().nth(2) == Some(symbol)))
}

fn frames(s: &Value) -> Vec<&str> {
    s["frames"].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

fn folded(s: &Value) -> String {
    let f: Vec<&str> = frames(s).into_iter().rev().collect();
    let kind = match s["double_kind"].as_str() {
        Some(d) => format!("{}:{d}", s["kind"].as_str().unwrap_or("?")),
        None => s["kind"].as_str().unwrap_or("?").to_owned(),
    };
    format!("{};{kind};{} {}", s["cgroup"].as_str().unwrap_or("?"), f.join(";"), s["count"])
}

fn madvise(
    body: &str,
    truth: &GroundTruth,
    api: SecondaryTlbApi,
    comparisons: &[Comparison],
    lines: &mut Vec<String>,
) -> Result<Vec<String>> {
    let view: Value = serde_json::from_str(body).context("not JSON")?;
    let cg = truth.cgroups.attributed();
    let mine: Vec<&Value> =
        view["stacks"].as_array().context("no stacks array")?.iter().filter(|s| s["cgroup_id"] == cg.id).collect();
    for s in mine.iter().take(8) {
        lines.push(folded(s));
    }
    let mut problems = Vec::new();
    if view["lost"] != 0 {
        problems.push(format!("stacks lost: {}", view["lost"]));
    }
    let count = |s: &&Value| s["count"].as_u64().unwrap_or(0);
    let invalidations: Vec<&Value> = mine.iter().copied().filter(|s| s["kind"] == "invalidation").collect();
    let through_madvise: u64 =
        invalidations.iter().filter(|s| frames(s).iter().any(|f| f.ends_with("_sys_madvise"))).map(count).sum();
    let want_madvise: u64 = truth
        .invalidations
        .sources
        .iter()
        .filter(|s| s.context_cause.as_deref() == Some("madvise") && s.initiator_pid.is_none())
        .map(|s| s.count)
        .sum();
    let all: u64 = invalidations.iter().map(count).sum();
    let want_all: u64 = truth.invalidations.brackets.values().sum();
    // Before 5.16 the unwinder cannot step over a kretprobe's trampoline: a stack ends at the kernel's own
    // `kretprobe_trampoline` frame where a function below has a kretprobe armed. 5.16 taught it
    // (`kretprobe_find_ret_addr`, commit 03bac0df2886). In kprobe mode the bracket hook's own kretprobe on
    // `__mmu_notifier_invalidate_range_start` has replaced that function's return address before its entry program
    // unwinds (seen on 5.10: every invalidation stack is `__mmu_notifier_invalidate_range_start`,
    // `kretprobe_trampoline`), so no invalidation stack can reach the system call there: then all of them must end
    // so, and none pass through madvise (the madvise cause is not asserted through stacks on such a kernel).
    let unwinds_kretprobes = kallsyms_has("kretprobe_find_ret_addr");
    let cut_at_start: u64 = invalidations
        .iter()
        .filter(|s| frames(s).ends_with(&["__mmu_notifier_invalidate_range_start", "kretprobe_trampoline"]))
        .map(count)
        .sum();
    let (want_through, want_cut) =
        if !unwinds_kretprobes && cut_at_start > 0 { (0, want_all) } else { (want_madvise, 0) };
    lines.push(format!(
        "invalidation stacks: {through_madvise} through madvise (truth {want_through}), {cut_at_start} ending at the \
         start hook's kretprobe trampoline (expected {want_cut}), {all} in all (truth {want_all})"
    ));
    if through_madvise != want_through {
        problems.push(format!("invalidation stacks through madvise: {through_madvise}, truth {want_through}"));
    }
    if cut_at_start != want_cut {
        problems.push(format!(
            "invalidation stacks ending at the start hook's kretprobe trampoline: {cut_at_start}, expected {want_cut}"
        ));
    }
    if all != want_all {
        problems.push(format!("invalidation stacks: {all}, truth {want_all} brackets"));
    }

    let doubles = truth.double_notifications.as_ref().context("kvm-madvise truth without doubles")?;
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut through_path = 0;
    // The same cut for the kprobe mode's return hook on `tlb_finish_mmu`: without `kretprobe_find_ret_addr`, the
    // frames below its trampoline are not required.
    for s in mine.iter().filter(|s| s["kind"] == "double_notification") {
        let kind = s["double_kind"].as_str().unwrap_or("?").to_owned();
        if kind == "end_then_gather" {
            let f = frames(s);
            let cut = !unwinds_kretprobes && f.last() == Some(&"kretprobe_trampoline");
            let path = if cut { &END_THEN_GATHER_PATH[1..] } else { END_THEN_GATHER_PATH };
            if path.iter().all(|want| want.split('|').any(|w| f.contains(&w))) {
                through_path += count(s);
            }
        }
        *by_kind.entry(kind).or_default() += count(s);
    }
    for (kind, total) in doubles.expected(api) {
        if kind == DoubleKind::AvoidedOnlyEnd {
            continue; // not a double: no stack is taken
        }
        let name = families::wire(&kind);
        let got = by_kind.remove(&name).unwrap_or(0);
        let series = format!("kind=\"{name}\"");
        let counter = comparisons
            .iter()
            .find(|c| c.series.starts_with(families::DOUBLES) && c.series.contains(&series))
            .map(|c| c.observed);
        lines.push(format!(
            "double_notification:{name} stacks: {got} (truth {}, counter increase {counter:?})",
            total.count
        ));
        if got != total.count || counter != i64::try_from(got).ok() {
            problems.push(format!(
                "double_notification:{name} stacks: {got}, truth {}, counter increase {counter:?}",
                total.count
            ));
        }
        if name == "end_then_gather" {
            lines.push(format!("  of which through {}: {through_path}", END_THEN_GATHER_PATH.join(", ")));
            if through_path != got {
                problems.push(format!(
                    "end_then_gather stacks through {}: {through_path} of {got}",
                    END_THEN_GATHER_PATH.join(", ")
                ));
            }
        }
    }
    for (kind, n) in by_kind {
        problems.push(format!("double_notification:{kind} stacks: {n}, the truth lists no such double here"));
    }
    Ok(problems)
}

/// One box of a flame graph: its frame and the events it spans (`fg:x`, `fg:w`: first event, count).
#[derive(Debug, PartialEq, Eq)]
struct FlameBox {
    frame: String,
    x: u64,
    w: u64,
}

/// The boxes of an SVG flame graph drawn by inferno (`<g><title>frame (…)</title><rect … fg:x fg:w/>`); an error if
/// the document is not well-formed XML.
fn svg_boxes(svg: &str) -> Result<Vec<FlameBox>> {
    let mut reader = quick_xml::Reader::from_str(svg);
    reader.config_mut().check_end_names = true;
    let (mut depth, mut in_title, mut root) = (0usize, false, None);
    let (mut title, mut boxes): (Option<String>, Vec<FlameBox>) = (None, Vec::new());
    loop {
        let event = reader.read_event().context("SVG is not well-formed XML")?;
        match &event {
            Event::Start(e) => {
                if depth == 0 {
                    root = Some(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                depth += 1;
                in_title = e.name().as_ref() == b"title";
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).context("unbalanced end tag")?;
                in_title = false;
            }
            Event::Text(t) if in_title => {
                // "frame (1,234 events, 12.50%)"
                let text = t.decode().context("title text")?;
                title = text.rsplit_once(" (").map(|(frame, _)| frame.to_owned());
            }
            _ => {}
        }
        if let Event::Empty(e) | Event::Start(e) = &event
            && e.name().as_ref() == b"rect"
            && let Some(frame) = title.take()
        {
            let attr = |name: &[u8]| -> Result<u64> {
                let a = e.try_get_attribute(name)?.with_context(|| format!("box {frame}: no fg:x/fg:w"))?;
                Ok(String::from_utf8_lossy(&a.value).parse()?)
            };
            boxes.push(FlameBox { x: attr(b"fg:x")?, w: attr(b"fg:w")?, frame });
        }
        if matches!(event, Event::Eof) {
            break;
        }
    }
    ensure!(depth == 0, "SVG ends inside an element");
    ensure!(root.as_deref() == Some("svg"), "root element {root:?}, not svg");
    Ok(boxes)
}

/// Events whose stack holds `frame` at least once: the union of its boxes' spans (a function the agent traces itself
/// shows twice in a stack, around its BPF trampoline, so boxes of one name can nest).
fn events_through(boxes: &[FlameBox], frame: &str) -> u64 {
    let mut spans: Vec<(u64, u64)> = boxes.iter().filter(|b| b.frame == frame).map(|b| (b.x, b.x + b.w)).collect();
    spans.sort_unstable();
    let (mut total, mut reach) = (0, 0);
    for (start, end) in spans {
        let start = start.max(reach);
        if end > start {
            total += end - start;
            reach = end;
        }
    }
    total
}

fn fork_svg(body: &str, truth: &GroundTruth, lines: &mut Vec<String>) -> Result<Vec<String>> {
    let boxes = svg_boxes(body)?;
    let fork = truth.fork.as_ref().context("fork-pinned truth without a fork part")?;
    let cg = truth.cgroups.attributed();
    if fork.copied_pages == 0 {
        bail!("the workload saw no eager copy: {fork:?}");
    }
    let mut problems = Vec::new();
    lines.push(format!("SVG: {} bytes, well-formed, {} boxes", body.len(), boxes.len()));
    for name in ["all", cg.path.as_str()].into_iter().chain(FORK_PATH.iter().copied()) {
        let got = events_through(&boxes, name);
        lines.push(format!("  through {name}: {got} events (truth {} copies)", fork.copied_pages));
        if got != fork.copied_pages {
            problems.push(format!("SVG: {got} events through {name}, truth {} copied pages", fork.copied_pages));
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_of_a_flame_graph() {
        let svg = r#"<?xml version="1.0"?><svg><g><title>all (1,234 events, 100%)</title>
            <rect x="0%" fg:x="0" fg:w="1234"/></g><g><title>f (64 events, 5.19%)</title><rect fg:x="0" fg:w="64"/></g>
            <g><title>f (64 events, 5.19%)</title><rect fg:x="0" fg:w="64"/></g>
            <g><title>f (6 events, 1%)</title><rect fg:x="100" fg:w="6"/></g></svg>"#;
        let boxes = svg_boxes(svg).unwrap();
        assert_eq!(boxes.len(), 4);
        assert_eq!(events_through(&boxes, "all"), 1234);
        assert_eq!(events_through(&boxes, "f"), 70, "nested boxes of one frame count once");
        assert!(svg_boxes("<svg><g></svg>").is_err());
        assert!(svg_boxes("<svg><g>").is_err());
    }
}
