//! Observers that share no code with the agent or the workload: the kernel's own kprobe machinery (tracefs).
//!
//! 1. [`KprobeCounter`]: hit counters (`kprobe_profile`) on KVM's callbacks `kvm_mmu_notifier_invalidate_range_start`
//!    and, before 6.6, `kvm_mmu_notifier_invalidate_range` (KVM implements no secondary-TLB callback from 6.6).
//!    KVM's callbacks run only while a VM is registered, once per VM per bracket or secondary-TLB call, and in the
//!    guest only the workload has VMs. So the start callback's hits must equal the truth's brackets × VMs, and the
//!    secondary-TLB callback's hits the agent's secondary-TLB increase for the owner × VMs.
//! 2. [`BracketTrace`]: a kprobe trace of the generic `__mmu_notifier_invalidate_range_start/_end` (with the
//!    range's `event`), the secondary-TLB entry point, its implementers and the TLB-gather window, replayed in time
//!    order to count brackets by event value and secondary-TLB calls by context. The fetch args' offsets come from
//!    the running kernel's BTF through the tests' own reader (`btf.rs`), not the agent's. Unfiltered, the generic
//!    entries would not match: they also run for an mm whose last subscriber left (`mm->notifier_subscriptions`
//!    stays allocated), e.g. the workload's munmaps and exit after its VM is gone, which reach nobody and which the
//!    agent rightly skips. The trace keeps a bracket exactly when the kernel's own walk would find a subscriber
//!    (rule and contexts at [`BracketTrace`]).
//!
//! `cargo xtask test --tier vm` runs both around every scenario, on every kernel and mode of the matrix. They replace
//! the bpftrace scripts `tests/scripts/verify-scenario.sh` and `verify-kvm-madvise.sh`, which no tier ran: their
//! `kvm:kvm_unmap_hva_range` count per pid is KVM's start-callback count here (one per bracket per VM, the same
//! event), and their fork-time page-allocation count was only printed, never compared (the fork families' truth comes
//! from PFN comparison).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::{SecondaryTlbApi, TlbContext};

/// The kprobe event group of the probes this module adds.
const GROUP: &str = "mmuscope_ref";
/// KVM's bracket callback, in every generation.
pub const KVM_START: &str = "kvm_mmu_notifier_invalidate_range_start";
/// KVM's secondary-TLB callback before 6.6 (`->invalidate_range`).
pub const KVM_SECONDARY: &str = "kvm_mmu_notifier_invalidate_range";

/// The KVM callbacks to count on a kernel with `api`.
pub fn kvm_callbacks(api: SecondaryTlbApi) -> &'static [&'static str] {
    match api {
        SecondaryTlbApi::InvalidateRange => &[KVM_START, KVM_SECONDARY],
        SecondaryTlbApi::ArchInvalidateSecondaryTlbs => &[KVM_START],
    }
}

/// Kprobes on some kernel functions, removed again on drop.
pub struct KprobeCounter {
    tracefs: PathBuf,
    functions: Vec<&'static str>,
}

impl KprobeCounter {
    /// Adds and enables one kprobe per function. Fails, naming the function, where the kernel refuses one.
    pub fn arm(functions: &[&'static str]) -> Result<Self> {
        let mut me = Self { tracefs: tracefs()?, functions: Vec::new() };
        for f in functions {
            let line = format!("p:{GROUP}/{f} {f}\n");
            append(&me.tracefs.join("kprobe_events"), &line).with_context(|| format!("adding a kprobe on {f}"))?;
            me.functions.push(f);
            let enable = me.tracefs.join("events").join(GROUP).join(f).join("enable");
            fs::write(&enable, "1").with_context(|| format!("enabling the kprobe on {f} ({})", enable.display()))?;
        }
        Ok(me)
    }

    /// Hits per function since [`Self::arm`] (`kprobe_profile` lines: `[GROUP/]name hits misses`).
    pub fn hits(&self) -> Result<BTreeMap<&'static str, u64>> {
        let path = self.tracefs.join("kprobe_profile");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut out = BTreeMap::new();
        for f in &self.functions {
            let with_group = format!("{GROUP}/{f}");
            let hits = text
                .lines()
                .find_map(|l| {
                    let mut cols = l.split_whitespace();
                    let name = cols.next()?;
                    (name == *f || name == with_group).then(|| cols.next()?.parse::<u64>().ok())?
                })
                .with_context(|| format!("{} has no line for {f}:\n{text}", path.display()))?;
            out.insert(*f, hits);
        }
        Ok(out)
    }
}

impl Drop for KprobeCounter {
    fn drop(&mut self) {
        for f in &self.functions {
            let _ = fs::write(self.tracefs.join("events").join(GROUP).join(f).join("enable"), "0");
            let _ = append(&self.tracefs.join("kprobe_events"), &format!("-:{GROUP}/{f}\n"));
        }
    }
}

/// The kprobe event group of the trace reference ([`BracketTrace`]).
const TRACE_GROUP: &str = "mmuscope_trace";
/// The trace event of the test module's secondary-TLB callback.
const MIRROR_IMPL: &str = "impl_mirror";
/// The trace event of the test module's interval-notifier callback (the HMM mirror).
const MIRROR_INTERVAL: &str = "interval_mirror";
/// The trace event of soft-RoCE's ODP interval callback (`rdma-odp`; rxe has ODP from 6.14, so older kernels refuse
/// the probe, which matters only to that scenario).
const RXE_INTERVAL: &str = "interval_rxe";
/// The trace event of `hmm_range_fault`'s return, filtered to -EBUSY (a kretprobe: `kprobe_profile` would count
/// every return, whatever the filter; the buffer holds only the matching ones).
const HMM_BUSY: &str = "hmm_busy";
/// The trace event of `mmu_interval_read_begin`'s entry, with the notifier's `invalidate_seq` and its mm's
/// subscriptions' `invalidate_seq`: equal ⇒ the reader waits (the function's own test, and the agent's).
const READ_BEGIN: &str = "read_begin";
/// Per-CPU trace buffer for one scenario: the matrix's largest runs write a few thousand ~150-byte lines.
const TRACE_BUFFER_KB: &str = "8192";

/// The offsets the trace reference's fetch args need, from the running kernel's BTF (the tests' own reader).
#[derive(Debug, Clone)]
pub struct Layout {
    range_event: u32,
    range_mm: u32,
    mm_subscriptions: u32,
    subscriptions_first: u32,
    subscriptions_itree: u32,
    subscriptions_seq: u32,
    interval_seq: u32,
    interval_mm: u32,
    /// `enum mmu_notifier_event` value → the truth's and the agent's name (`MMU_NOTIFY_SOFT_DIRTY` → `soft_dirty`).
    events: BTreeMap<i64, String>,
    /// Whether `struct mmu_notifier_ops` still has `change_pte` (gone in 6.10): the subscriber inventory must then
    /// list KVM's (`subscribers`). Read here so that the guest check parses BTF once.
    pub ops_change_pte: bool,
    /// Whether BPF trampolines take struct arguments by value (6.1+: `struct btf_func_model` has `arg_flags`); without
    /// it no fentry program can attach to `__mmu_notifier_change_pte` (its `pte_t`).
    pub trampoline_struct_args: bool,
}

impl Layout {
    /// The running kernel's layout, read once per guest check (parsing every BTF type takes seconds under TCG).
    pub fn running() -> Result<&'static Self> {
        static LAYOUT: std::sync::OnceLock<Result<Layout, String>> = std::sync::OnceLock::new();
        LAYOUT
            .get_or_init(|| {
                let layout = crate::btf::Btf::open_vmlinux().and_then(|b| Self::from_btf(&b));
                // The offsets in the log: a count that disagrees can then be told from a misread field.
                if let Ok(l) = &layout {
                    println!(
                        "trace reference offsets (BTF): mmu_notifier_range.event +{} .mm +{}, \
                         mm_struct.notifier_subscriptions +{}, mmu_notifier_subscriptions.list +{} .itree +{} \
                         .invalidate_seq +{}, mmu_interval_notifier.invalidate_seq +{} .mm +{}; \
                         mmu_notifier_ops.change_pte: {}",
                        l.range_event,
                        l.range_mm,
                        l.mm_subscriptions,
                        l.subscriptions_first,
                        l.subscriptions_itree,
                        l.subscriptions_seq,
                        l.interval_seq,
                        l.interval_mm,
                        if l.ops_change_pte { "present" } else { "absent" }
                    );
                }
                layout.map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn from_btf(btf: &crate::btf::Btf) -> Result<Self> {
        let events = btf
            .enum_values("mmu_notifier_event")?
            .into_iter()
            .map(|(name, v)| (v, name.trim_start_matches("MMU_NOTIFY_").to_ascii_lowercase()))
            .collect();
        Ok(Self {
            range_event: btf.offset("mmu_notifier_range", &["event"])?,
            range_mm: btf.offset("mmu_notifier_range", &["mm"])?,
            mm_subscriptions: btf.offset("mm_struct", &["notifier_subscriptions"])?,
            subscriptions_first: btf.offset("mmu_notifier_subscriptions", &["list", "first"])?,
            subscriptions_itree: btf.offset("mmu_notifier_subscriptions", &["itree", "rb_root", "rb_node"])?,
            subscriptions_seq: btf.offset("mmu_notifier_subscriptions", &["invalidate_seq"])?,
            interval_seq: btf.offset("mmu_interval_notifier", &["invalidate_seq"])?,
            interval_mm: btf.offset("mmu_interval_notifier", &["mm"])?,
            events,
            ops_change_pte: btf.has_member("mmu_notifier_ops", "change_pte")?,
            trampoline_struct_args: btf.has_member("btf_func_model", "arg_flags")?,
        })
    }

    /// Fetch args of `mm` (a fetch arg holding an `mm_struct *`), its first hlist subscriber and its interval tree's
    /// root: the two things `__mmu_notifier_invalidate_range_start` walks. Either non-zero ⇒ a subscriber sees it.
    fn subscribers(&self, mm: &str) -> String {
        let subs = format!("+{}({mm})", self.mm_subscriptions);
        format!(
            "mm={mm}:x64 subs={subs}:x64 list=+{}({subs}):x64 itree=+{}({subs}):x64",
            self.subscriptions_first, self.subscriptions_itree
        )
    }
}

/// What the trace reference arms: (event name, probe, fetch args, filter). `sectlb` is the kernel's secondary-TLB
/// entry point; `impl` each implementer callback the guest can have (KVM's before 6.6). The bracket and the gather
/// window close at the returns (`ended`, `finished`), because the calls they make (`_end`'s own `->invalidate_range`
/// before 6.6, `tlb_finish_mmu`'s flush) are inside them.
/// `fullmm_entry`: whether the kernel has `tlb_gather_mmu_fullmm` (5.11+; before, `tlb_gather_mmu` opens full-mm
/// windows too, with start 0 and end -1).
fn trace_probes(
    layout: &Layout,
    api: SecondaryTlbApi,
    fullmm_entry: bool,
) -> Vec<(&'static str, String, Option<&'static str>)> {
    let range_mm = format!("+{}(%di)", layout.range_mm);
    // A failed fetch leaves its field unwritten (the kernel's trace_probe_tmpl.h returns before storing), so `list`
    // and `itree` mean something only where `subs` is non-NULL.
    let subscribed = Some("subs != 0 && (list != 0 || itree != 0)");
    let entry = match api {
        SecondaryTlbApi::InvalidateRange => "__mmu_notifier_invalidate_range",
        SecondaryTlbApi::ArchInvalidateSecondaryTlbs => "__mmu_notifier_arch_invalidate_secondary_tlbs",
    };
    let mut out = vec![
        (
            "start",
            format!(
                "p:{TRACE_GROUP}/start __mmu_notifier_invalidate_range_start event=+{}(%di):u32 {}",
                layout.range_event,
                layout.subscribers(&range_mm)
            ),
            subscribed,
        ),
        (
            "end",
            format!("p:{TRACE_GROUP}/end __mmu_notifier_invalidate_range_end {}", layout.subscribers(&range_mm)),
            subscribed,
        ),
        ("ended", format!("r:{TRACE_GROUP}/ended __mmu_notifier_invalidate_range_end"), None),
        (
            "sectlb",
            format!("p:{TRACE_GROUP}/sectlb {entry} {}", layout.subscribers("%di")),
            Some("subs != 0 && list != 0"),
        ),
        ("gather", format!("p:{TRACE_GROUP}/gather tlb_gather_mmu tlb=%di:x64 mm=%si:x64"), None),
        ("finished", format!("r:{TRACE_GROUP}/finished tlb_finish_mmu"), None),
    ];
    if fullmm_entry {
        out.push((
            "gather_fullmm",
            format!("p:{TRACE_GROUP}/gather_fullmm tlb_gather_mmu_fullmm tlb=%di:x64 mm=%si:x64"),
            None,
        ));
    }
    if api == SecondaryTlbApi::InvalidateRange {
        out.push(("impl", format!("p:{TRACE_GROUP}/impl {KVM_SECONDARY}"), None));
    }
    // The test module's implementer (`--subscriber sectlb`), for either API. `MOD:SYM` on a module not loaded yet is
    // accepted and registered when it loads (trace_kprobe.c: "might be able to register after target module is
    // loaded").
    out.push((MIRROR_IMPL, format!("p:{TRACE_GROUP}/{MIRROR_IMPL} mmuscope_mirror:mirror_tlb_invalidate"), None));
    out.push((MIRROR_INTERVAL, format!("p:{TRACE_GROUP}/{MIRROR_INTERVAL} mmuscope_mirror:mirror_invalidate"), None));
    out.push((RXE_INTERVAL, format!("p:{TRACE_GROUP}/{RXE_INTERVAL} rdma_rxe:rxe_ib_invalidate_range"), None));
    // Interval readers (every caller: in the guest only the workload's drivers have interval notifiers).
    out.push((HMM_BUSY, format!("r:{TRACE_GROUP}/{HMM_BUSY} hmm_range_fault ret=$retval:s32"), Some("ret == -16")));
    let subs = format!("+{}(+{}(%di))", layout.mm_subscriptions, layout.interval_mm);
    out.push((
        READ_BEGIN,
        format!(
            "p:{TRACE_GROUP}/{READ_BEGIN} mmu_interval_read_begin seq=+{}(%di):u64 mmseq=+{}({subs}):u64",
            layout.interval_seq, layout.subscriptions_seq
        ),
        None,
    ));
    out
}

/// The second observer of brackets and secondary-TLB calls: kprobe trace events (tracefs), with fetch args at the
/// BTF offsets of [`Layout`], read back from the trace buffer in time order (`trace_clock` global, restored on drop).
///
/// **Which brackets count.** A bracket reaches a subscriber when its mm's subscriber list is non-empty at
/// `__mmu_notifier_invalidate_range_start` (every classic subscriber is called for every bracket), or when an
/// interval notifier's range intersects it — which the kernel's interval-tree walk decides, so the trace sees it as
/// the interval callback (the test module's `mirror_invalidate`, rxe's `rxe_ib_invalidate_range`) running inside
/// that bracket, in the same task. The
/// probe's filter keeps the brackets whose mm has either (the fetch args read
/// `range->mm->notifier_subscriptions->{list.first, itree.rb_root.rb_node}`), so the workload's brackets after its
/// VMs are gone, and every other process's, drop out without a pid filter: in the guest only the workload's mm has
/// subscribers. Counted per event value, they must equal the truth's brackets per event and the agent's
/// `mmuscope_invalidations_total{event}` increase for the owner. (A bracket on an mm with only interval notifiers
/// that misses every interval reaches nobody, like the agent, and is not counted; an interval callback outside any
/// bracket is the mm's release, not a bracket.)
///
/// **Secondary-TLB calls and their context.** Each entry-point call on a subscribed mm is placed by the calling
/// task's open windows on that mm: inside a bracket (start … return of `_end`) → `bracket`, else inside a gather
/// (`tlb_gather_mmu[_fullmm]` … return of `tlb_finish_mmu`) → `gather`, else `outside`. A call *reaches* an
/// implementer when an implementer callback (`impl`) runs next in the same task; before 6.6 a plain `_end` calls
/// `->invalidate_range` itself, so a callback right after `end` is a call in the bracket's context. The agent counts
/// only reached calls; the raw calls are printed beside them (from 6.6 KVM implements no callback, so KVM-only
/// scenarios reach nobody and every reached count is 0 while the raw ones are not).
pub struct BracketTrace {
    tracefs: PathBuf,
    layout: Layout,
    armed: Vec<&'static str>,
    /// Probes the kernel refused (e.g. no `tlb_gather_mmu_fullmm`): named in the result.
    refused: Vec<String>,
    old_clock: Option<String>,
    old_buffer_kb: Option<String>,
}

/// What [`BracketTrace::read`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Traced {
    /// Brackets that reach a subscriber, by event name.
    pub brackets: BTreeMap<String, u64>,
    /// Secondary-TLB entry-point calls on subscribed mms, by context.
    pub secondary_calls: BTreeMap<TlbContext, u64>,
    /// Secondary-TLB calls (entry point, or before 6.6 `_end`'s own) that reached an implementer, by context.
    pub secondary_reached: BTreeMap<TlbContext, u64>,
    /// Anything the reference cannot account for (unknown event values, callbacks after no call, unbalanced
    /// windows, lost events, refused probes): each a failure of the reference, not of the agent.
    pub problems: Vec<String>,
    /// Why the test module's callback could not be probed, if so: only its scenarios need it.
    pub mirror_refused: Option<String>,
    /// Why soft-RoCE's ODP callback could not be probed, if so: only `rdma-odp` needs it.
    pub rxe_refused: Option<String>,
    /// `hmm_range_fault` returns of -EBUSY.
    pub hmm_busy: u64,
    /// `mmu_interval_read_begin` calls that found an invalidation of their notifier in flight (they wait).
    pub read_waits: u64,
    /// Why the interval-reader probes (`hmm_busy`, `read_begin`) could not be armed, if so: their counts are then
    /// no reference.
    pub readers_refused: Option<String>,
}

impl BracketTrace {
    pub fn arm(layout: &Layout, api: SecondaryTlbApi) -> Result<Self> {
        let tracefs = tracefs()?;
        let read = |f: &str| fs::read_to_string(tracefs.join(f)).ok().map(|s| s.trim().to_owned());
        // `trace_clock` lists all clocks with the current one in brackets.
        let old_clock = read("trace_clock").and_then(|s| {
            s.split_whitespace().find(|c| c.starts_with('[')).map(|c| c.trim_matches(['[', ']']).to_owned())
        });
        let mut me = Self {
            old_buffer_kb: read("buffer_size_kb"),
            tracefs,
            layout: layout.clone(),
            armed: Vec::new(),
            refused: Vec::new(),
            old_clock,
        };
        // Tasks migrate between CPUs; the merged buffer is in each task's order only with a global clock.
        fs::write(me.tracefs.join("trace_clock"), "global").context("setting trace_clock to global")?;
        fs::write(me.tracefs.join("buffer_size_kb"), TRACE_BUFFER_KB).context("sizing the trace buffer")?;
        fs::write(me.tracefs.join("trace"), "").context("clearing the trace buffer")?;
        let fullmm_entry = kernel_has_function("tlb_gather_mmu_fullmm")?;
        for (name, probe, filter) in trace_probes(layout, api, fullmm_entry) {
            if let Err(e) = append(&me.tracefs.join("kprobe_events"), &format!("{probe}\n")) {
                me.refused.push(format!("{probe}: {e:#}"));
                continue;
            }
            me.armed.push(name);
            let dir = me.tracefs.join("events").join(TRACE_GROUP).join(name);
            if let Some(filter) = filter {
                fs::write(dir.join("filter"), filter).with_context(|| format!("filter {filter:?} on {name}"))?;
            }
            fs::write(dir.join("enable"), "1").with_context(|| format!("enabling the trace probe {name}"))?;
        }
        for must in ["start", "end", "ended", "sectlb", "gather", "finished"] {
            if !me.armed.contains(&must) {
                bail!("the trace reference needs its {must} probe: {}", me.refused.join("; "));
            }
        }
        Ok(me)
    }

    /// Stops recording and classifies the buffer. Call it before any kprobe event is removed: the kernel empties the
    /// buffer when one is (its records could no longer be printed).
    pub fn read(&self) -> Result<Traced> {
        for name in &self.armed {
            let _ = fs::write(self.tracefs.join("events").join(TRACE_GROUP).join(name).join("enable"), "0");
        }
        let text = fs::read_to_string(self.tracefs.join("trace")).context("reading the trace buffer")?;
        let mut traced = classify(&text, &self.layout.events);
        for r in &self.refused {
            if r.contains(MIRROR_IMPL) || r.contains(MIRROR_INTERVAL) {
                traced.mirror_refused = Some(r.clone());
            } else if r.contains(RXE_INTERVAL) {
                traced.rxe_refused = Some(r.clone());
            } else if r.contains(&format!("/{HMM_BUSY} ")) || r.contains(&format!("/{READ_BEGIN} ")) {
                traced.readers_refused = Some(r.clone());
            } else {
                traced.problems.push(format!("probe refused (its part is not observed): {r}"));
            }
        }
        traced.problems.extend(self.overruns());
        Ok(traced)
    }

    /// Events the ring buffer dropped, per CPU (`per_cpu/cpuN/stats`: `overrun: N`): any makes the counts partial.
    fn overruns(&self) -> Vec<String> {
        let Ok(cpus) = fs::read_dir(self.tracefs.join("per_cpu")) else { return vec![] };
        cpus.flatten()
            .filter_map(|cpu| {
                let stats = fs::read_to_string(cpu.path().join("stats")).ok()?;
                let lost = stats.lines().find_map(|l| l.strip_prefix("overrun:"))?.trim().parse::<u64>().ok()?;
                (lost > 0)
                    .then(|| format!("the trace buffer of {} lost {lost} events", cpu.file_name().to_string_lossy()))
            })
            .collect()
    }
}

impl Drop for BracketTrace {
    fn drop(&mut self) {
        for name in &self.armed {
            let _ = fs::write(self.tracefs.join("events").join(TRACE_GROUP).join(name).join("enable"), "0");
            let _ = append(&self.tracefs.join("kprobe_events"), &format!("-:{TRACE_GROUP}/{name}\n"));
        }
        if let Some(clock) = &self.old_clock {
            let _ = fs::write(self.tracefs.join("trace_clock"), clock);
        }
        // `7 (expanded: 1408)` before first use: the size it would have.
        if let Some(kb) = self.old_buffer_kb.as_deref().and_then(|s| {
            s.split_once("expanded: ").map_or(s.split_whitespace().next(), |(_, e)| Some(e.trim_end_matches(')')))
        }) {
            let _ = fs::write(self.tracefs.join("buffer_size_kb"), kb);
        }
        let _ = fs::write(self.tracefs.join("trace"), "");
    }
}

/// One task's open windows while the buffer is replayed.
#[derive(Default)]
struct TaskState {
    /// Each open bracket, innermost last.
    brackets: Vec<OpenBracket>,
    /// An `end` was seen; its return closes the innermost bracket.
    ending: bool,
    /// (tlb, mm) of each open gather window, innermost last.
    gathers: Vec<(u64, u64)>,
    /// The secondary-TLB call an implementer callback would be part of, and whether one already counted it (one
    /// callback per subscriber: several VMs call several).
    call: Option<(TlbContext, bool)>,
}

/// A bracket between its start and the return of its `_end`.
struct OpenBracket {
    mm: u64,
    /// Its event, while it is not counted yet: on an mm with interval notifiers only, it reaches a subscriber only
    /// once an interval callback runs inside it.
    uncounted: Option<String>,
}

/// Replays `trace` (tracefs text, one event per line, time order) into counts; `events` names event values.
pub fn classify(trace: &str, events: &BTreeMap<i64, String>) -> Traced {
    let mut out = Traced::default();
    let mut tasks: BTreeMap<u32, TaskState> = BTreeMap::new();
    for line in trace.lines().filter(|l| !l.starts_with('#')) {
        let Some((pid, name, args)) = parse_line(line) else { continue };
        let task = tasks.entry(pid).or_default();
        let arg = |key: &str| args.get(key).copied();
        match name {
            "start" => {
                task.call = None;
                let event = arg("event").unwrap_or(u64::MAX);
                let mut uncounted = None;
                match i64::try_from(event).ok().and_then(|v| events.get(&v)) {
                    // A classic subscriber is called for every bracket on its mm.
                    Some(e) if arg("list").unwrap_or(0) != 0 => *out.brackets.entry(e.clone()).or_insert(0) += 1,
                    Some(e) => uncounted = Some(e.clone()),
                    None => out.problems.push(format!("a bracket with event value {event}, not in BTF's enum")),
                }
                task.brackets.push(OpenBracket { mm: arg("mm").unwrap_or(0), uncounted });
            }
            "end" => {
                let mm = arg("mm").unwrap_or(0);
                match task.brackets.iter().rposition(|b| b.mm == mm) {
                    Some(_) => task.ending = true,
                    None => out.problems.push(format!("pid {pid}: _end of mm {mm:#x} without its start")),
                }
                // Before 6.6 a plain `_end` calls `->invalidate_range` itself: a call in the bracket.
                task.call = Some((TlbContext::Bracket, false));
            }
            "ended" => {
                task.call = None;
                if std::mem::take(&mut task.ending) {
                    task.brackets.pop();
                }
            }
            "gather" | "gather_fullmm" => {
                task.call = None;
                task.gathers.push((arg("tlb").unwrap_or(0), arg("mm").unwrap_or(0)));
            }
            "finished" => {
                task.call = None;
                task.gathers.pop();
            }
            "sectlb" => {
                let mm = arg("mm").unwrap_or(0);
                let context = if task.brackets.iter().any(|b| b.mm == mm) {
                    TlbContext::Bracket
                } else if task.gathers.iter().any(|&(_, m)| m == mm) {
                    TlbContext::Gather
                } else {
                    TlbContext::Outside
                };
                *out.secondary_calls.entry(context).or_insert(0) += 1;
                task.call = Some((context, false));
            }
            MIRROR_INTERVAL | RXE_INTERVAL => {
                // The interval-tree walk runs inside `_start`: the innermost open bracket is the one it serves.
                if let Some(event) = task.brackets.last_mut().and_then(|b| b.uncounted.take()) {
                    *out.brackets.entry(event).or_insert(0) += 1;
                }
            }
            // The filter keeps -EBUSY only (`ret` is signed: not in `args`).
            HMM_BUSY if line.contains("ret=-16") => out.hmm_busy += 1,
            HMM_BUSY => out.problems.push(format!("pid {pid}: an hmm_busy event without ret=-16: {line}")),
            READ_BEGIN => match (arg("seq"), arg("mmseq")) {
                (Some(seq), Some(current)) => out.read_waits += u64::from(seq == current),
                _ => out.problems.push(format!("pid {pid}: a read_begin event without its sequences: {line}")),
            },
            "impl" | MIRROR_IMPL => match &mut task.call {
                Some((context, counted)) => {
                    if !*counted {
                        *out.secondary_reached.entry(*context).or_insert(0) += 1;
                        *counted = true;
                    }
                }
                None => out.problems.push(format!("pid {pid}: an implementer callback after no secondary-TLB call")),
            },
            _ => {}
        }
    }
    for (pid, task) in tasks {
        if !task.brackets.is_empty() {
            out.problems.push(format!("pid {pid}: {} bracket(s) still open at the end", task.brackets.len()));
        }
    }
    out
}

/// `comm-pid [cpu] flags timestamp: name: (func+0x0/0x..) key=value …` → (pid, name, numeric args).
fn parse_line(line: &str) -> Option<(u32, &str, BTreeMap<&str, u64>)> {
    let cpu = line.find(" [")?;
    let pid = line[..cpu].trim_end().rsplit_once('-')?.1.parse().ok()?;
    let rest = &line[cpu..];
    let (name, args) = rest.split_once(": ")?.1.split_once(':')?;
    let name = name.trim();
    let mut values = BTreeMap::new();
    for kv in args.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            let v = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            };
            if let Some(v) = v {
                values.insert(k, v);
            }
        }
    }
    Some((pid, name, values))
}

/// Whether `/proc/kallsyms` lists the kernel text symbol `name`.
fn kernel_has_function(name: &str) -> Result<bool> {
    let kallsyms = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(kallsyms.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, kind, sym) = (f.next(), f.next(), f.next());
        kind.is_some_and(|k| k.eq_ignore_ascii_case("t")) && sym == Some(name) && f.next().is_none()
    }))
}

/// The tracefs mount point, from `/proc/mounts`.
fn tracefs() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    match mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "tracefs").then(|| PathBuf::from(dir))
    }) {
        Some(dir) => Ok(dir),
        None => bail!("tracefs is not mounted; the kprobe reference needs it"),
    }
}

/// `kprobe_events` takes one command per write without truncating the others (`>>` in a shell).
fn append(path: &std::path::Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut file =
        fs::OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    file.write_all(line.as_bytes()).with_context(|| format!("writing {line:?} to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 6.1 `madvise(MADV_DONTNEED)` of one page with one VM, as tracefs prints it: a gather opens, the bracket
    /// (CLEAR) opens and closes with `_end`'s own `->invalidate_range`, then `tlb_finish_mmu` flushes through the
    /// entry point. Another task's gather on another mm, in between, changes nothing.
    #[test]
    fn classifies_a_zap_in_order() {
        let events = BTreeMap::from([(0, "unmap".to_owned()), (1, "clear".to_owned())]);
        let trace = "\
# tracer: nop
 mmuscope-worklo-77      [001] .....   10.000001: gather: (tlb_gather_mmu+0x0/0x90) tlb=0xffffc900 mm=0xffff8880
 mmuscope-worklo-77      [001] .....   10.000002: start: (__mmu_notifier_invalidate_range_start+0x0/0x1c0) event=1 mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
            mmuscope-12  [000] .....   10.000003: gather: (tlb_gather_mmu+0x0/0x90) tlb=0xffffc800 mm=0xffff9990
 mmuscope-worklo-77      [001] .....   10.000004: end: (__mmu_notifier_invalidate_range_end+0x0/0x180) mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
 mmuscope-worklo-77      [001] .....   10.000005: impl: (kvm_mmu_notifier_invalidate_range+0x0/0x90)
 mmuscope-worklo-77      [001] .....   10.000006: ended: (zap_page_range_single+0xf0/0x190 <- __mmu_notifier_invalidate_range_end)
 mmuscope-worklo-77      [001] .....   10.000007: sectlb: (__mmu_notifier_invalidate_range+0x0/0xa0) mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
 mmuscope-worklo-77      [001] .....   10.000008: impl: (kvm_mmu_notifier_invalidate_range+0x0/0x90)
 mmuscope-worklo-77      [001] .....   10.000009: impl: (kvm_mmu_notifier_invalidate_range+0x0/0x90)
 mmuscope-worklo-77      [001] .....   10.000010: finished: (zap_page_range_single+0x10f/0x190 <- tlb_finish_mmu)
 mmuscope-worklo-77      [000] .....   10.000011: sectlb: (__mmu_notifier_invalidate_range+0x0/0xa0) mm=0xffff8880 subs=0xffff1 list=0xffff2 itree=0x0
";
        let t = classify(trace, &events);
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!(t.brackets, BTreeMap::from([("clear".to_owned(), 1)]));
        use TlbContext::*;
        assert_eq!(t.secondary_calls, BTreeMap::from([(Gather, 1), (Outside, 1)]));
        // The second `impl` of one call (a second VM) counts once; the outside call reached nobody.
        assert_eq!(t.secondary_reached, BTreeMap::from([(Bracket, 1), (Gather, 1)]));

        let t = classify(&trace.replace("event=1", "event=9"), &events);
        assert_eq!(t.problems, vec!["a bracket with event value 9, not in BTF's enum".to_owned()]);
    }

    #[test]
    fn interval_only_brackets_count_when_an_interval_callback_runs_in_them() {
        let events = BTreeMap::from([(0, "unmap".to_owned()), (1, "clear".to_owned())]);
        // Two brackets on an mm with interval notifiers only: the first misses every interval (no callback), the
        // second hits the mirror's (one callback); then the mm's release calls the callback outside any bracket.
        let trace = "\
 mmuscope-worklo-90      [000] .....   20.000001: start: (__mmu_notifier_invalidate_range_start+0x0/0x1c0) event=0 mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000002: end: (__mmu_notifier_invalidate_range_end+0x0/0x180) mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000003: ended: (zap_page_range_single+0xf0/0x190 <- __mmu_notifier_invalidate_range_end)
 mmuscope-worklo-90      [000] .....   20.000004: start: (__mmu_notifier_invalidate_range_start+0x0/0x1c0) event=1 mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000005: interval_mirror: (mirror_invalidate+0x0/0x90 [mmuscope_mirror])
 mmuscope-worklo-90      [000] .....   20.000006: interval_mirror: (mirror_invalidate+0x0/0x90 [mmuscope_mirror])
 mmuscope-worklo-90      [000] .....   20.000007: end: (__mmu_notifier_invalidate_range_end+0x0/0x180) mm=0xffff8880 subs=0xffff1 list=0x0 itree=0xffff3
 mmuscope-worklo-90      [000] .....   20.000008: ended: (zap_page_range_single+0xf0/0x190 <- __mmu_notifier_invalidate_range_end)
 mmuscope-worklo-90      [000] .....   20.000009: interval_mirror: (mirror_invalidate+0x0/0x90 [mmuscope_mirror])
";
        let t = classify(trace, &events);
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!(t.brackets, BTreeMap::from([("clear".to_owned(), 1)]));
    }

    #[test]
    fn interval_readers_count_busy_returns_and_equal_sequences() {
        // Two readers: the first finds its notifier's sequence equal to the mm's (an invalidation of it in flight:
        // a wait), the second not; one hmm_range_fault returned -EBUSY (the filter keeps only those).
        let trace = "\
 kworker/u8:2-40      [001] .....   30.000001: read_begin: (mmu_interval_read_begin+0x0/0x120) seq=7 mmseq=7
 kworker/u8:2-40      [001] .....   30.000002: hmm_busy: (ib_umem_odp_map_dma_and_lock+0x1a0/0x3c0 <- hmm_range_fault) ret=-16
 kworker/u8:2-40      [001] .....   30.000003: read_begin: (mmu_interval_read_begin+0x0/0x120) seq=7 mmseq=8
";
        let t = classify(trace, &BTreeMap::new());
        assert_eq!(t.problems, Vec::<String>::new());
        assert_eq!((t.hmm_busy, t.read_waits), (1, 1));
        let t = classify(&trace.replace("ret=-16", "ret=0"), &BTreeMap::new());
        assert_eq!((t.hmm_busy, t.problems.len()), (0, 1));
    }

    #[test]
    fn secondary_callback_only_before_6_6() {
        assert_eq!(kvm_callbacks(SecondaryTlbApi::InvalidateRange), &[KVM_START, KVM_SECONDARY]);
        assert_eq!(kvm_callbacks(SecondaryTlbApi::ArchInvalidateSecondaryTlbs), &[KVM_START]);
    }
}
