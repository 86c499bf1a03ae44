//! [`BracketTrace`]: a kprobe trace of the generic notifier entry points, replayed to count brackets and
//! secondary-TLB calls (the module's second observer).

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::SecondaryTlbApi;

use super::replay::{Traced, classify};
use super::{KVM_SECONDARY, append, tracefs};

/// The kprobe event group of the trace reference ([`BracketTrace`]).
const TRACE_GROUP: &str = "mmuscope_trace";
/// The trace event of the test module's secondary-TLB callback.
pub(super) const MIRROR_IMPL: &str = "impl_mirror";
/// The trace event of the test module's interval-notifier callback (the HMM mirror).
pub(super) const MIRROR_INTERVAL: &str = "interval_mirror";
/// The trace event of soft-RoCE's ODP interval callback (`rdma-odp`; rxe has ODP from 6.14, so older kernels refuse
/// the probe, which matters only to that scenario).
pub(super) const RXE_INTERVAL: &str = "interval_rxe";
/// The trace event of `hmm_range_fault`'s return, filtered to -EBUSY (a kretprobe: `kprobe_profile` would count
/// every return, whatever the filter; the buffer holds only the matching ones).
pub(super) const HMM_BUSY: &str = "hmm_busy";
/// The trace event of `mmu_interval_read_begin`'s entry, with the notifier's `invalidate_seq` and its mm's
/// subscriptions' `invalidate_seq`: equal ⇒ the reader waits (the function's own test, and the agent's).
pub(super) const READ_BEGIN: &str = "read_begin";
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

/// Whether `/proc/kallsyms` lists the kernel text symbol `name`.
fn kernel_has_function(name: &str) -> Result<bool> {
    let kallsyms = fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    Ok(kallsyms.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_, kind, sym) = (f.next(), f.next(), f.next());
        kind.is_some_and(|k| k.eq_ignore_ascii_case("t")) && sym == Some(name) && f.next().is_none()
    }))
}
