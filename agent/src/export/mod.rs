//! The Prometheus side: reads the kernel maps at scrape time and turns them into `mmuscope_*` families
//! (ebpf_exporter's model: no user-space counters), written as the text exposition by [`text`].
//!
//! One file per group of families, named after its probe family where it has one: [`brackets`] (invalidation counts
//! and latency), [`secondary`] (secondary-TLB invalidations and double notifications), [`cross`] (cross-cgroup
//! invalidations), [`fork`] and [`fork_hugetlb`] (fork copies of pinned pages), [`intervals`] (interval-notifier waits), [`subscribers`]
//! (the subscriber inventory), [`programs`] (our eBPF programs' cost) and [`agent`] (the agent's own health).
//! Each file declares its families ([`series::Metric`]: name, type, labels, help) in its own `METRICS`; [`METRICS`]
//! gathers them, and `docs/metrics.md` is made from them ([`reference`]). [`series`] is the row model every group
//! builds, [`scrape`] puts a whole `/metrics` response together.

mod agent;
mod brackets;
mod change_pte;
mod cross;
mod fork;
mod fork_hugetlb;
mod histogram;
mod intervals;
mod programs;
mod reference;
mod scrape;
mod secondary;
mod series;
mod subscribers;
mod text;

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Instant,
};

pub use agent::BuildInfo;
pub use reference::metrics_reference;
pub use scrape::Scrape;

use crate::{
    cgroups::{CgroupLabels, CgroupNames, HierarchyKind},
    collect::{Maps, Snapshot},
    kernel::EventNames,
    probes::{Mode, PlanReport, families},
};
use series::{Family, Metric};

/// Every metric family the agent can export, by file, in the order of the metrics reference.
const METRICS: &[&[&Metric]] = &[
    brackets::METRICS,
    secondary::METRICS,
    change_pte::METRICS,
    cross::METRICS,
    fork::METRICS,
    fork_hugetlb::METRICS,
    intervals::METRICS,
    subscribers::METRICS,
    agent::METRICS,
    programs::METRICS,
];

pub struct Exporter {
    /// Locked for reading and for removing expired cgroups' keys.
    maps: Mutex<Maps>,
    cgroups: Mutex<CgroupNames>,
    events: EventNames,
    report: PlanReport,
    build: BuildInfo,
    page_size: u64,
    /// What attached, so families whose programs did not are left out rather than zero.
    attached: Attached,
    /// The subscriber inventory, when its family attached.
    subscribers: Option<Mutex<crate::subscribers::Sweeper>>,
}

impl Exporter {
    pub fn new(
        maps: Maps,
        cgroups: CgroupNames,
        events: EventNames,
        report: PlanReport,
        build: BuildInfo,
        interval_fields: bool,
    ) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page_size = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let attached = Attached::of(&report, interval_fields);
        Self {
            maps: Mutex::new(maps),
            cgroups: Mutex::new(cgroups),
            events,
            report,
            build,
            page_size,
            attached,
            subscribers: None,
        }
    }

    pub fn with_subscribers(mut self, sweeper: Option<crate::subscribers::Sweeper>) -> Self {
        self.subscribers = sweeper.map(Mutex::new);
        self
    }

    fn callback_stats(&self) -> std::collections::BTreeMap<(String, &'static str), mmuscope_abi::BracketStats> {
        let sweeper = self.subscribers.as_ref().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()));
        sweeper.map(|s| s.callback_stats()).unwrap_or_default()
    }

    /// Kernel text symbols of `addrs` from the subscriber inventory's kallsyms handle (`unknown` without it).
    fn symbol_names(&self, addrs: &[u64]) -> std::collections::BTreeMap<u64, String> {
        match &self.subscribers {
            Some(s) => s.lock().unwrap_or_else(|e| e.into_inner()).symbol_names(addrs),
            None => addrs.iter().map(|a| (*a, "unknown".to_string())).collect(),
        }
    }

    /// Names every subscriber mask of `snap` into its `subscriber_labels`, from the slots' callbacks (`unknown`
    /// without the inventory's kallsyms handle, or while a name is being read).
    fn name_subscribers(&self, snap: &mut crate::collect::Snapshot) {
        let kinds = match &self.subscribers {
            Some(s) if !snap.subscriber_slots.is_empty() => {
                s.lock().unwrap_or_else(|e| e.into_inner()).slot_kinds(&snap.subscriber_slots)
            }
            _ => Default::default(),
        };
        let masks = snap.subscriber_masks();
        snap.subscriber_labels = masks.into_iter().map(|m| (m, crate::subscribers::mask_label(m, &kinds))).collect();
    }

    /// The subscriber inventory (re-swept if due), `None` when its family is not attached.
    pub fn subscribers(&self) -> Option<Arc<crate::subscribers::Inventory>> {
        self.subscribers.as_ref().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).current())
    }

    /// One collection: reads the maps, resolves their cgroups and hands every family, with `extra` (families of
    /// other sources), to `write`. The families borrow the cgroup index, which stays locked until `write` returns;
    /// the keys of expired cgroups are removed from the kernel maps after that.
    pub fn collect<'e, R>(&self, extra: Vec<Family<'e>>, write: impl FnOnce(Vec<Family<'_>>) -> R) -> R {
        let started = Instant::now();
        let (snap, read_errors, capacity) = {
            let maps = self.maps();
            (maps.snapshot(), maps.read_errors(), maps.stats_capacity)
        };
        let mut snap = match snap {
            Ok(snap) => snap,
            Err(e) => {
                // Fail only what depends on the maps; the plan and the failed reads are still worth exporting.
                tracing::error!("reading the kernel maps failed: {e:#}");
                let mut out = extra;
                out.extend([agent::probe_attached(&self.report), agent::map_read_errors(&read_errors)]);
                return write(out);
            }
        };
        let inventory = self.subscribers();
        let callbacks = if inventory.is_some() { self.callback_stats() } else { Default::default() };
        let mut names = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        resolve(&mut names, &snap, inventory.as_deref());
        let live = names.liveness();
        let mut expired: HashSet<(u32, u64)> = HashSet::new();
        snap.retain_cgroups(|flags, id| {
            let keep = live(HierarchyKind::of_key(flags), id);
            if !keep {
                expired.insert((flags, id));
            }
            keep
        });
        drop(live);
        self.name_subscribers(&mut snap);
        let subscriber_labels = std::mem::take(&mut snap.subscriber_labels);
        let addrs: Vec<u64> = (snap.interval_waits.iter().map(|(k, _)| k.invalidate_fn))
            .chain(snap.interval_collisions.iter().map(|(k, _)| k.invalidate_fn))
            .collect();
        let symbols = if addrs.is_empty() { Default::default() } else { self.symbol_names(&addrs) };
        let written = {
            let names = &*names;
            // `cgroup`, `namespace`, `pod`, `container` (with `--max-cgroups` aggregation): every cgroup-keyed
            // family takes its labels from here.
            let cgroup = |flags: u32, id: u64| names.labels(HierarchyKind::of_key(flags), id);
            let symbol = |a: u64| symbols.get(&a).map_or("unknown", String::as_str);
            let subscriber = |m: u32| subscriber_labels.get(&m).map_or("unknown", String::as_str);
            let mut out = extra;
            let context = Context {
                cgroup: &cgroup,
                symbol: &symbol,
                subscriber: &subscriber,
                events: &self.events,
                page_size: self.page_size,
            };
            out.extend(snapshot_families(&snap, &context, &self.attached));
            if let Some(inv) = &inventory {
                out.extend(subscribers::families(inv, &cgroup));
                out.push(subscribers::callback_family(&callbacks));
            }
            out.extend(agent::cgroup_families(names));
            out.extend(agent::families(&snap, capacity, &self.report, &self.build, started));
            out.push(agent::map_read_errors(&read_errors));
            write(out)
        };
        drop(names);
        if !expired.is_empty() {
            let removed = self.maps().remove_cgroups(|flags, id| expired.contains(&(flags, id)));
            tracing::debug!(cgroups = expired.len(), keys = removed, "removed expired cgroups from the kernel maps");
            let mut names = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
            names.forget_expired(expired.iter().map(|(flags, id)| (HierarchyKind::of_key(*flags), *id)));
        }
        written
    }
}

/// What the families built from a map snapshot need besides it.
struct Context<'c, 'a> {
    /// `cgroup(flags, id)`: the labels of a key's cgroup.
    cgroup: &'c dyn Fn(u32, u64) -> CgroupLabels<'a>,
    /// `symbol(addr)`: the kernel text symbol at `addr`.
    symbol: &'c dyn Fn(u64) -> &'a str,
    /// `subscriber(mask)`: the `subscriber` label of a subscriber mask.
    subscriber: &'c dyn Fn(u32) -> &'a str,
    events: &'a EventNames,
    page_size: u64,
}

/// Which probe programs attached, for the families that are left out (rather than zero) without them.
#[derive(Clone, Copy, Debug)]
struct Attached {
    /// `fork_copies` with an alternative that sees THP splits.
    fork_splits: bool,
    fork_hugetlb: bool,
    change_pte: bool,
    secondary_tlb: bool,
    /// The bracket programs run in fentry or kprobe mode, where they know the mm's owner and time brackets.
    brackets_timed: bool,
    interval_readers: bool,
    /// Timed brackets with the interval-notifier fields resolved, so they count interval hits.
    interval_hits: bool,
}

impl Attached {
    /// Everything, for the metrics reference.
    const ALL: Self = Self {
        fork_splits: true,
        fork_hugetlb: true,
        change_pte: true,
        secondary_tlb: true,
        brackets_timed: true,
        interval_readers: true,
        interval_hits: true,
    };

    fn of(report: &PlanReport, interval_fields: bool) -> Self {
        let timed = report.attached_in(families::brackets::ID, &[Mode::Fentry, Mode::Kprobe]);
        Self {
            fork_splits: report.attached_in(families::fork_copies::ID, &[Mode::Fentry, Mode::Kprobe]),
            fork_hugetlb: report.attached(families::fork_hugetlb::ID),
            change_pte: report.attached(families::change_pte::ID),
            secondary_tlb: report.attached(families::secondary_tlb::ID),
            brackets_timed: timed,
            interval_readers: report.attached(families::interval_notifiers::ID),
            interval_hits: timed && interval_fields,
        }
    }
}

/// Every family built from the per-cgroup maps. The metrics reference runs the same function on a sample snapshot,
/// so a family added here is documented without another edit.
fn snapshot_families<'a>(snap: &Snapshot, context: &Context<'_, 'a>, attached: &Attached) -> Vec<Family<'a>> {
    let Context { cgroup, symbol, subscriber, events, page_size } = *context;
    let mut out = brackets::families(snap, cgroup, subscriber, events);
    out.extend(fork::families(snap, cgroup, page_size, attached.fork_splits));
    out.extend(fork_hugetlb::families(snap, cgroup, attached.fork_hugetlb));
    out.extend(secondary::families(snap, cgroup, subscriber, attached.secondary_tlb));
    out.extend(change_pte::families(snap, cgroup, attached.change_pte));
    out.extend(cross::families(snap, cgroup, attached.brackets_timed));
    let intervals = intervals::Attached { readers: attached.interval_readers, hits: attached.interval_hits };
    out.extend(intervals::families(snap, cgroup, symbol, intervals));
    out
}

/// Resolves the cgroups of the snapshot and of the subscriber inventory in one go (the `--max-cgroups` admission
/// is decided over all ids of one call).
fn resolve(names: &mut CgroupNames, snap: &crate::collect::Snapshot, inv: Option<&crate::subscribers::Inventory>) {
    let mms = inv.into_iter().flat_map(|i| i.mms.iter()).map(|m| (HierarchyKind::of_key(m.cgroup_flags), m.cgroup_id));
    names.resolve_all(snap.cgroup_ids().map(|(flags, id)| (HierarchyKind::of_key(flags), id)).chain(mms));
}

impl Exporter {
    /// Runs `f` on a fresh snapshot with the cgroup index resolved for it (the same state `/metrics` uses), for the
    /// JSON API. Expired cgroups are already filtered out.
    pub fn with_reading<R>(
        &self,
        f: impl FnOnce(&crate::collect::Snapshot, &CgroupNames, &EventNames) -> R,
    ) -> anyhow::Result<R> {
        let mut snap = self.maps().snapshot()?;
        let inventory = self.subscribers();
        self.name_subscribers(&mut snap);
        let mut names = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        resolve(&mut names, &snap, inventory.as_deref());
        let live = names.liveness();
        snap.retain_cgroups(|flags, id| live(HierarchyKind::of_key(flags), id));
        drop(live);
        Ok(f(&snap, &names, &self.events))
    }

    /// At start-up: removes from the kernel maps the keys of cgroups that no longer exist — counted by the agent
    /// before a restart with `--pin`, and removed since. Their series ended with that agent; exported again they
    /// would all land in `cgroup="unknown"` (the new agent never saw their names) and make it jump. Returns how many
    /// cgroups were dropped (none without pinned maps: the maps start empty).
    pub fn forget_vanished_cgroups(&self) -> anyhow::Result<usize> {
        let snap = self.maps().snapshot()?;
        let ids: HashSet<(u32, u64)> = snap.cgroup_ids().filter(|(_, id)| *id != 0).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let mut names = self.cgroups.lock().unwrap_or_else(|e| e.into_inner());
        names.resolve_all(ids.iter().map(|(flags, id)| (HierarchyKind::of_key(*flags), *id)));
        let gone: HashSet<(u32, u64)> =
            ids.into_iter().filter(|(flags, id)| names.info(HierarchyKind::of_key(*flags), *id).is_none()).collect();
        drop(names);
        if !gone.is_empty() {
            self.maps().remove_cgroups(|flags, id| gone.contains(&(flags, id)));
        }
        Ok(gone.len())
    }

    /// A cgroup just created at `path` (see `crate::births`).
    pub fn learn_cgroup(&self, path: &str) {
        let found = self.cgroups.lock().unwrap_or_else(|e| e.into_inner()).learn(path);
        tracing::debug!(path, hierarchies = found, "cgroup created");
    }

    /// Figures of the cgroup index without a new snapshot (`tracked`, `overflow_total`, policy).
    pub fn with_cgroups<R>(&self, f: impl FnOnce(&CgroupNames) -> R) -> R {
        f(&self.cgroups.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The name of an `enum mmu_notifier_event` value (`unknown` for one BTF did not list).
    pub fn event_name(&self, value: u32) -> String {
        self.events.name(value.into()).to_string()
    }

    /// Every `enum mmu_notifier_event` name of this kernel, and `unknown`.
    pub fn event_names(&self) -> Vec<String> {
        self.events.names().map(str::to_string).chain(std::iter::once("unknown".to_string())).collect()
    }

    fn maps(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn report(&self) -> &PlanReport {
        &self.report
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    pub fn build(&self) -> &BuildInfo {
        &self.build
    }
}
