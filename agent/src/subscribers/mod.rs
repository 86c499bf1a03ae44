//! The subscriber inventory: which mms have which mmu_notifier subscribers, and which have
//! long-term pinned pages or the has-pinned flag.
//!
//! A *sweep* runs the `iter/task` program (see `agent-ebpf/programs/src/subscribers.rs`) over
//! every task, parses its records ([`records`]), names each callback through kallsyms
//! ([`symbols`]) and classifies the subscriber from the symbol ([`classify`]).
//!
//! **When to sweep.** Walking every task costs a few milliseconds on a busy host, so sweeps are
//! not periodic:
//! - at start-up (still privileged, which also opens kallsyms);
//! - in fentry and kprobe modes, at scrape or API time **when the change generation moved**:
//!   programs on the return of `__mmu_notifier_register`, `mmu_notifier_unregister`,
//!   `mmu_notifier_put`, `mmu_interval_notifier_insert{,_locked}`, `mmu_interval_notifier_remove`
//!   and on `mmap:exit_mmap` (mms with subscriptions or pins only) bump a per-CPU counter whose
//!   sum is the generation. It is read before the sweep, so a change during a sweep causes
//!   another one next time. Pinning has no such hook (every GUP passes the functions that could
//!   tell, storage I/O included), so these modes also sweep when the last one is older than
//!   [`HOOKED_MAX_AGE`]: a process that only pins shows in the pinned gauges within that time;
//! - where no such hook can attach (tracepoint mode, e.g. kernels without kprobes and
//!   trampolines), at scrape or API time **at most once per [`THROTTLE`]**: the view is then at
//!   most that old, which the gauges' users (dashboards, alerts over minutes) tolerate. Hooked modes sweep on the
//!   same terms while the fork-copy hook is detached, so that a first pin attaches it at the next request;
//! - after every sweep, the fork-copy hook is attached if some mm has the has-pinned flag and detached otherwise,
//!   and the subscription hooks (operation boundaries, TLB-gather and cause windows) if some mm has notifier
//!   subscriptions ([`crate::probes::Arming`]): at start-up in place, on a request by the group's worker thread, so
//!   that the request does not wait for tens of trampoline updates.
//!
//! The result is an immutable [`Inventory`] shared with `/metrics` and `/api/v1/subscribers`.

mod callbacks;
mod classify;
mod iter;
mod records;
mod symbols;
#[cfg(test)]
mod tests;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use aya::{
    maps::{MapData, PerCpuArray},
    programs::ProgramFd,
};
use mmuscope_abi::{SubscriberRecord, callback_slot, names};

use crate::probes::{Mode, Probes, families, spec::Hook};
pub use classify::kind as classify;
pub use classify::{KVM, LABEL, mask_label};

pub use records::{RawMm, parse};
pub use symbols::Symbols;

/// Minimum time between sweeps when no change hook is attached.
pub const THROTTLE: Duration = Duration::from_secs(1);
/// The oldest inventory served in fentry and kprobe modes, where pins open no change generation.
pub const HOOKED_MAX_AGE: Duration = Duration::from_secs(10);

/// One callback of a subscription, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Callback {
    /// `invalidate_range_start`, `invalidate_range_end`, `invalidate_range` (before 6.6),
    /// `arch_invalidate_secondary_tlbs` (6.6+), `release`, or `invalidate` (interval notifiers).
    pub slot: &'static str,
    pub address: u64,
    /// `name` or `name [module]`; `None` when kallsyms does not name the address.
    pub symbol: Option<String>,
}

/// One registered `struct mmu_notifier` or `struct mmu_interval_notifier`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// e.g. `kvm`; interval notifiers whose callback is not known count as `interval`.
    pub kind: String,
    /// An interval notifier's interval, `[start, last]` (`last` inclusive); `None` for a classic notifier.
    pub interval: Option<(u64, u64)>,
    /// Non-NULL callbacks only: which of the ops the inventory reads (see [`mmuscope_abi::callback_slot`]) the
    /// subscriber implements.
    pub callbacks: Vec<Callback>,
}

/// One address space (reported under its first thread-group leader).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmEntry {
    pub pid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    pub cgroup_flags: u32,
    pub pinned_pages: u64,
    /// The sticky has-pinned flag (`MMF_HAS_PINNED`): fork() copies this mm's maybe-pinned pages eagerly.
    pub has_pinned: bool,
    /// The classic notifiers in list order, then the interval notifiers in address order.
    pub subscriptions: Vec<Subscription>,
    /// More notifiers than the program walks ([`mmuscope_abi::MAX_NOTIFIERS`]).
    pub truncated: bool,
    /// More interval notifiers than the program walks ([`mmuscope_abi::MAX_INTERVALS`]), or a tree it could not walk.
    pub intervals_truncated: bool,
}

/// The outcome of the last sweep.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub mms: Vec<MmEntry>,
    /// When it was taken (`None`: never).
    pub swept_at: Option<Instant>,
    /// Why the last sweep failed, if it did (the previous inventory is kept).
    pub error: Option<String>,
    /// Every subscriber kind seen since start-up, so that a kind whose last subscription went away reads 0
    /// rather than vanishing from `/metrics`.
    pub kinds_seen: std::collections::BTreeSet<String>,
    /// Some callback's name is still being read from kallsyms (off the request path, see [`symbols`]): its
    /// subscription reads `unknown` (`interval`) until a later sweep.
    pub symbols_pending: bool,
    /// The fork-copy hook after this sweep's decision.
    pub fork_copy_hook: crate::probes::ArmingView,
    /// The subscription hooks (operation boundaries, TLB-gather and cause windows) after this sweep's decision.
    pub subscription_hooks: crate::probes::ArmingView,
    /// Addresses of the callbacks being timed (`subscriber_callback_duration_seconds`) after this sweep.
    pub timed_callbacks: std::collections::BTreeSet<u64>,
}

/// The secondary-TLB slot's name on this kernel's generation.
fn secondary_slot_name(generation: crate::kernel::Generation) -> &'static str {
    match generation {
        crate::kernel::Generation::InvalidateRange => "invalidate_range",
        _ => "arch_invalidate_secondary_tlbs",
    }
}

/// Turns parsed records into entries, naming callbacks with `symbols` (already resolved).
pub fn build(raw: &[RawMm], symbols: &Symbols, secondary_slot: &'static str) -> Vec<MmEntry> {
    let named = |slot: &'static str, address: u64| Callback {
        slot,
        address,
        symbol: symbols.get(address).map(|s| match &s.module {
            Some(m) => format!("{} [{m}]", s.name),
            None => s.name.clone(),
        }),
    };
    raw.iter()
        .map(|m| {
            let mut subscriptions: Vec<Subscription> = m
                .notifiers
                .iter()
                .map(|n| {
                    let c = &n.callbacks;
                    let slots = [
                        ("invalidate_range_start", c[callback_slot::INVALIDATE_RANGE_START]),
                        ("invalidate_range_end", c[callback_slot::INVALIDATE_RANGE_END]),
                        (secondary_slot, c[callback_slot::SECONDARY_TLB]),
                        ("release", c[callback_slot::RELEASE]),
                        ("change_pte", c[callback_slot::CHANGE_PTE]),
                    ];
                    // The subscriber is whoever implements the first non-NULL callback.
                    let first = slots.iter().find(|(_, a)| *a != 0).map(|(_, a)| *a).unwrap_or(0);
                    Subscription {
                        kind: classify(symbols.get(first).as_ref()),
                        interval: None,
                        callbacks: slots.iter().filter(|(_, a)| *a != 0).map(|(s, a)| named(s, *a)).collect(),
                    }
                })
                .collect();
            for i in &m.intervals {
                let invalidate = i.callbacks[0];
                let kind = match classify(symbols.get(invalidate).as_ref()) {
                    k if k == "unknown" => "interval".to_string(),
                    k => k,
                };
                let callbacks = if invalidate != 0 { vec![named("invalidate", invalidate)] } else { vec![] };
                subscriptions.push(Subscription { kind, interval: Some((i.start, i.last)), callbacks });
            }
            MmEntry {
                pid: m.mm.tgid,
                comm: records::comm(&m.mm.comm),
                cgroup_id: m.mm.cgroup_id,
                cgroup_flags: m.mm.cgroup_flags,
                pinned_pages: m.mm.pinned_pages,
                has_pinned: m.mm.has_pinned != 0,
                subscriptions,
                truncated: m.mm.truncated != 0,
                intervals_truncated: m.intervals_truncated,
            }
        })
        .collect()
}

/// Every callback address of `raw`, for [`Symbols::request`].
fn addresses(raw: &[RawMm]) -> impl Iterator<Item = u64> + '_ {
    raw.iter().flat_map(|m| {
        let notifiers = m.notifiers.iter().flat_map(|n: &SubscriberRecord| n.callbacks);
        notifiers.chain(m.intervals.iter().map(|i| i.callbacks[0]))
    })
}

/// The sum of the per-CPU change counters the registration, unregistration and exit hooks bump.
fn change_generation(map: &PerCpuArray<MapData, u64>) -> Result<u64, aya::maps::MapError> {
    Ok(map.get(&0, 0)?.iter().fold(0u64, |a, n| a.wrapping_add(*n)))
}

/// Who a sweep runs for, which decides how it names callbacks it has not met before and how it switches the on-demand
/// hook groups.
#[derive(Clone, Copy)]
enum SweepFor {
    /// Start-up (privileged, and nobody waits on a request): read kallsyms now, switch the groups in place.
    StartUp,
    /// A request: queue names for the reader thread (they come with a later sweep), leave the switching to the groups'
    /// worker threads (`Arming::want`).
    Request,
}

/// Runs sweeps per the module's policy and keeps the last inventory.
pub struct Sweeper {
    program: ProgramFd,
    /// The change generation (hooked modes); `None`: throttled sweeps. Shared with the subscription hooks' worker,
    /// which reads it around a detach (`Arming::want`'s recheck).
    changes: Option<Arc<PerCpuArray<MapData, u64>>>,
    symbols: Symbols,
    secondary_slot: &'static str,
    generation: u64,
    /// [`Symbols::answered`] when the current inventory was built.
    answered: u64,
    current: Arc<Inventory>,
    callbacks: Option<callbacks::CallbackTimer>,
    arming: crate::probes::Armings,
}

impl Sweeper {
    /// Sets up the sweeper if the `subscribers` family attached, and takes the first sweep, naming what it meets from
    /// `start_up_symbols` (the agent's copy of the text symbols; `None`: from kallsyms). Call while privileged
    /// (kallsyms addresses).
    /// Also attaches the callback timers (see [`callbacks`]) to what it found, unless `forced` excludes them.
    pub fn start(
        probes: &mut Probes,
        generation: crate::kernel::Generation,
        forced: Option<Mode>,
        late_callbacks: bool,
        start_up_symbols: Option<std::fs::File>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(alt) = probes.report.attached_alternative(families::subscribers::ID) else { return Ok(None) };
        let mode = alt.mode;
        let table = families::FAMILIES.iter().find(|f| f.id == families::subscribers::ID);
        let spec = table
            .and_then(|f| f.alternatives().into_iter().find(|a| a.name == alt.name))
            .and_then(|a| a.programs.into_iter().find(|p| p.hook == Hook::Iter))
            .context("the subscribers family has no iterator program")?;
        let program = probes.program_fd(&spec.program.to_string())?;
        let changes = match mode {
            Mode::Fentry | Mode::Kprobe => Some(Arc::new(probes.take_map(names::SUBSCRIBER_CHANGES)?.try_into()?)),
            Mode::Tracepoint => None,
        };
        let mut symbols = Symbols::open(start_up_symbols);
        symbols.preload(&classify::known_prefixes());
        let mut s = Self {
            program,
            changes,
            symbols,
            secondary_slot: secondary_slot_name(generation),
            generation: 0,
            answered: 0,
            current: Arc::new(Inventory::default()),
            callbacks: None,
            arming: probes.arming.clone(),
        };
        s.sweep(SweepFor::StartUp);
        let inventory = s.current.clone();
        s.callbacks = callbacks::attach(probes, &inventory, &s.symbols, forced, late_callbacks);
        if let Some(timer) = &s.callbacks {
            let mut first = (*s.current).clone();
            first.timed_callbacks = timer.addresses();
            s.current = Arc::new(first);
        }
        s.symbols.started();
        if let Some(e) = &s.current.error {
            tracing::warn!("first subscriber sweep failed: {e}");
        } else {
            tracing::info!(mms = s.current.mms.len(), hooked = s.changes.is_some(), "subscriber inventory");
        }
        Ok(Some(s))
    }

    /// The inventory, re-swept first if the policy says it may be stale, or if names it lacked have been read
    /// since. Never waits for kallsyms.
    pub fn current(&mut self) -> Arc<Inventory> {
        let older_than = |age| self.current.swept_at.is_none_or(|t| t.elapsed() >= age);
        let fork_copy = &self.arming.fork_copy;
        let waiting_for_a_pin = fork_copy.on_demand() && !fork_copy.view().attached;
        // A change the hooks saw always re-sweeps; while waiting for a pin (which no hook sees) the age bound is the
        // throttle's. (Throttling a change too left a registration made within a second of the last sweep unlisted:
        // the held workload's three intervals in the vm tier, 6.1 fentry.)
        let due = match &self.changes {
            Some(_) => {
                let max_age = if waiting_for_a_pin { THROTTLE } else { HOOKED_MAX_AGE };
                self.read_generation() != self.generation || older_than(max_age)
            }
            None => older_than(THROTTLE),
        };
        if due || self.symbols.answered() != self.answered {
            self.sweep(SweepFor::Request);
        }
        // An attach request may have switched a group since the sweep (`probes::arming`): say what holds now.
        let (fork_copy_hook, subscription_hooks) = (self.arming.fork_copy.view(), self.arming.subscriptions.view());
        if fork_copy_hook != self.current.fork_copy_hook || subscription_hooks != self.current.subscription_hooks {
            self.current = Arc::new(Inventory { fork_copy_hook, subscription_hooks, ..(*self.current).clone() });
        }
        self.current.clone()
    }

    /// The text symbol at each address (`unknown` where none, or while it is being read: see [`symbols`]), through
    /// the kallsyms handle opened while privileged; for other kernel callbacks read at scrape time (interval
    /// notifiers' `ops->invalidate`). Never waits for kallsyms.
    pub fn symbol_names(&mut self, addrs: &[u64]) -> std::collections::BTreeMap<u64, String> {
        self.symbols.request(addrs.iter().copied());
        let name = |a: &u64| self.symbols.get(*a).map_or_else(|| "unknown".to_string(), |s| s.name);
        addrs.iter().map(|a| (*a, name(a))).collect()
    }

    /// The subscriber kind of each `(slot, callback)` of the bracket programs' subscriber slots, named like the
    /// inventory's subscriptions (`unknown` while a name is being read). Never waits for kallsyms.
    pub fn slot_kinds(&mut self, slots: &[(u32, u64)]) -> std::collections::BTreeMap<u32, String> {
        self.symbols.request(slots.iter().map(|(_, a)| *a));
        slots.iter().map(|(slot, a)| (*slot, classify(self.symbols.get(*a).as_ref()))).collect()
    }

    /// Callback durations by `(subscriber, callback)`; empty when no timer is attached.
    pub fn callback_stats(&self) -> std::collections::BTreeMap<(String, &'static str), mmuscope_abi::BracketStats> {
        self.callbacks.as_ref().map(|c| c.read()).unwrap_or_default()
    }

    fn read_generation(&self) -> u64 {
        let Some(map) = &self.changes else { return 0 };
        change_generation(map).unwrap_or_else(|e| {
            tracing::warn!("reading the subscriber change generation failed: {e}");
            self.generation.wrapping_add(1) // sweep rather than go stale
        })
    }

    /// Around the subscription hooks' detach: whether a subscription changed since this sweep read the generation.
    fn changed_since_sweep(&self) -> Option<crate::probes::Recheck> {
        let (map, swept) = (self.changes.clone()?, self.generation);
        Some(Box::new(move || match change_generation(&map) {
            Ok(now) if now == swept => None,
            Ok(_) => Some("a subscription changed during the sweep".to_string()),
            Err(e) => Some(format!("the subscriber change generation cannot be read ({e})")),
        }))
    }

    fn sweep(&mut self, purpose: SweepFor) {
        self.generation = self.read_generation();
        self.answered = self.symbols.answered();
        let started = Instant::now();
        let raw = iter::run(&self.program)
            .context("running the subscriber iterator")
            .and_then(|bytes| parse(&bytes).context("parsing the subscriber iterator output"));
        let iterated = started.elapsed();
        if raw.is_err() {
            // hooked mode: retry at the next call rather than wait for a change
            self.generation = self.generation.wrapping_add(1);
        }
        let mut next = match raw {
            Ok(raw) => {
                match purpose {
                    SweepFor::StartUp => self.symbols.resolve_now(addresses(&raw)),
                    SweepFor::Request => self.symbols.request(addresses(&raw)),
                }
                let mms = build(&raw, &self.symbols, self.secondary_slot);
                // A subscription is named after its first callback; one still being read is not a kind (it would
                // stay in `kinds_seen`, a zero series for ever).
                let pending = |s: &Subscription| s.callbacks.first().is_some_and(|c| self.symbols.pending(c.address));
                let symbols_pending = mms.iter().flat_map(|m| &m.subscriptions).any(pending);
                let pinned = mms.iter().any(|m| m.has_pinned);
                let subscribed = mms.iter().any(|m| !m.subscriptions.is_empty());
                for (arming, wanted) in [(&self.arming.fork_copy, pinned), (&self.arming.subscriptions, subscribed)] {
                    let condition = arming.group().condition();
                    let (why, recheck) = match wanted {
                        true => (format!("a process has {condition}"), None),
                        // A change since this sweep's read of the generation (a registration whose program saw the
                        // hooks still attached, so asked for nothing) keeps them, to be swept next time.
                        false => {
                            let subscriptions = arming.group() == crate::probes::spec::OnDemand::WhileSubscribed;
                            (
                                format!("no process has {condition}"),
                                subscriptions.then(|| self.changed_since_sweep()).flatten(),
                            )
                        }
                    };
                    match purpose {
                        SweepFor::StartUp => arming.switch_now(wanted, why, recheck),
                        SweepFor::Request => arming.want(wanted, why, recheck),
                    }
                }
                let mut kinds_seen = self.current.kinds_seen.clone();
                kinds_seen.extend(
                    mms.iter().flat_map(|m| m.subscriptions.iter().filter(|s| !pending(s)).map(|s| s.kind.clone())),
                );
                Inventory {
                    mms,
                    swept_at: Some(Instant::now()),
                    error: None,
                    kinds_seen,
                    symbols_pending,
                    fork_copy_hook: self.arming.fork_copy.view(),
                    subscription_hooks: self.arming.subscriptions.view(),
                    timed_callbacks: Default::default(),
                }
            }
            Err(e) => Inventory {
                error: Some(format!("{e:#}")),
                swept_at: Some(Instant::now()),
                fork_copy_hook: self.arming.fork_copy.view(),
                subscription_hooks: self.arming.subscriptions.view(),
                ..(*self.current).clone()
            },
        };
        if let Some(timer) = &mut self.callbacks {
            timer.extend(&next, &self.symbols);
            next.timed_callbacks = timer.addresses();
        }
        self.current = Arc::new(next);
        let took = started.elapsed();
        // Normally milliseconds; say so when it is not (it delays the scrape or API call that triggered it).
        if took > Duration::from_millis(500) {
            tracing::warn!(
                iterator_ms = iterated.as_millis() as u64,
                total_ms = took.as_millis() as u64,
                "slow subscriber sweep"
            );
        }
    }
}
