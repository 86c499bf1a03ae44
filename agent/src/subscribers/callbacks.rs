//! Per-subscriber callback latency (`subscriber_callback_duration_seconds{subscriber,callback}`).
//!
//! At start-up, after the first sweep, the agent attaches one kprobe/kretprobe pair (programs in
//! `agent-ebpf/programs/src/callbacks.rs`) to every invalidation callback the inventory names
//! (`invalidate_range_start`, `_end`, and the secondary-TLB one), plus KVM's callbacks when
//! kallsyms has them (KVM is loaded but no VM runs yet). Subscriber callbacks mostly live in
//! modules (kvm, iommu and GPU drivers); aya 0.14 loads fentry programs against vmlinux BTF
//! only, so kprobes are used in every mode that has them (none on kernels without kprobes).
//!
//! Interval notifiers' `invalidate` (HMM mirrors, RDMA ODP) is timed like the classic callbacks.
//!
//! Attaching needs CAP_PERFMON, which the agent drops right after start-up. So by default a callback that first
//! appears later (a module loaded afterwards, e.g. the first GPU or RDMA user) is listed by the inventory but not
//! timed until the agent restarts. With `--probes.late-callbacks` the agent keeps what opening a kprobe needs in its
//! permitted set (CAP_PERFMON; CAP_SYS_ADMIN too where `kernel.perf_event_paranoid` is 3, Debian's default), raised
//! only while attaching (its price: that privilege for the agent's whole life), and each sweep attaches the same two
//! programs to callbacks it has not met, by address ([`crate::probes::perf_kprobe`]). The plan report names what was
//! attached at start-up.

use std::collections::BTreeMap;

use std::os::fd::{AsFd, OwnedFd};

use aya::{
    maps::{MapData, PerCpuHashMap},
    programs::{KProbe, ProgramFd},
};
use mmuscope_abi::{BracketStats, names};

use super::{Inventory, Symbols, classify};
use crate::probes::{
    FamilyId, Mode, Probes, Status, families,
    report::{AlternativeReport, FamilyReport, HookReport},
    spec::Hook,
};

const ENTRY: &str = families::CALLBACK_ENTRY_PROGRAM;
const RETURN: &str = families::CALLBACK_RETURN_PROGRAM;
pub const FAMILY: FamilyId = families::SUBSCRIBER_CALLBACKS;
/// Callbacks that are not about invalidation (release, young-bit tests) are not timed.
const TIMED: &[&str] = &[
    "invalidate_range_start",
    "invalidate_range_end",
    "invalidate_range",
    "arch_invalidate_secondary_tlbs",
    // An interval notifier's only invalidation callback.
    "invalidate",
];
/// Known subscribers whose callbacks are timed even before the first registration.
const KNOWN: &[(&str, &str)] = &[
    ("kvm_mmu_notifier_invalidate_range_start", "invalidate_range_start"),
    ("kvm_mmu_notifier_invalidate_range_end", "invalidate_range_end"),
    ("kvm_mmu_notifier_invalidate_range", "invalidate_range"),
];
/// `bpf_get_func_ip` in a kprobe reports the probed address, which is past an `endbr64` on IBT kernels.
const IP_SLACK: u64 = 16;

/// One timed function.
#[derive(Clone, Debug)]
pub struct Target {
    pub address: u64,
    pub symbol: String,
    pub subscriber: String,
    pub callback: &'static str,
}

pub struct CallbackTimer {
    stats: PerCpuHashMap<MapData, u64, BracketStats>,
    targets: Vec<Target>,
    late: Option<Late>,
}

/// The programs kept to time callbacks met after start-up (`--probes.late-callbacks`), and their perf events.
struct Late {
    entry: ProgramFd,
    ret: ProgramFd,
    events: Vec<OwnedFd>,
    /// Addresses that failed once (not retried at every sweep).
    failed: std::collections::BTreeSet<u64>,
}

/// What to time: the inventory's timed callbacks and the known ones present in kallsyms, one per address.
fn targets(inv: &Inventory, symbols: &Symbols) -> Vec<Target> {
    let mut by_addr: BTreeMap<u64, Target> = BTreeMap::new();
    for s in inv.mms.iter().flat_map(|m| &m.subscriptions) {
        for c in s.callbacks.iter().filter(|c| TIMED.contains(&c.slot)) {
            let Some(symbol) = &c.symbol else { continue };
            let name = symbol.split_whitespace().next().unwrap_or(symbol).to_string();
            by_addr.entry(c.address).or_insert(Target {
                address: c.address,
                symbol: name,
                subscriber: s.kind.clone(),
                callback: c.slot,
            });
        }
    }
    for (name, callback) in KNOWN {
        let Some(address) = symbols.address_of(name) else { continue };
        let subscriber = classify(symbols.get(address).as_ref());
        by_addr.entry(address).or_insert(Target { address, symbol: name.to_string(), subscriber, callback });
    }
    by_addr.into_values().collect()
}

/// Attaches the timing programs; always adds the family's line to the plan report.
/// With `late`, the programs are kept to time callbacks met later ([`CallbackTimer::extend`]), and loaded even when
/// nothing is known yet.
pub fn attach(
    probes: &mut Probes,
    inv: &Inventory,
    symbols: &Symbols,
    forced: Option<Mode>,
    late: bool,
) -> Option<CallbackTimer> {
    let wanted = targets(inv, symbols);
    let names: Vec<&'static str> = wanted.iter().map(|t| &*Box::leak(t.symbol.clone().into_boxed_str())).collect();
    let kprobes = probes.report.capabilities.kprobes.clone();
    let (status, reason, timer) = if forced == Some(Mode::Tracepoint) {
        (Status::Excluded, "--mode tracepoint".to_string(), None)
    } else if let Err(why) = kprobes {
        (Status::Unavailable, why, None)
    } else if wanted.is_empty() && !late {
        (
            Status::Unavailable,
            "no subscriber callback known at start-up (no VM or other subscriber yet; --probes.late-callbacks times \
             those met later)"
                .into(),
            None,
        )
    } else {
        match load_and_attach(probes, wanted.clone(), late) {
            Ok((timer, partial)) => (Status::Attached, partial, Some(timer)),
            Err(why) => (Status::Failed, why, None),
        }
    };
    let hooks = names
        .iter()
        .flat_map(|&target| {
            [
                HookReport {
                    program: ENTRY.to_string(),
                    hook: Hook::KProbe,
                    target,
                    on_demand: crate::probes::spec::OnDemand::Always,
                },
                HookReport {
                    program: RETURN.to_string(),
                    hook: Hook::KRetProbe,
                    target,
                    on_demand: crate::probes::spec::OnDemand::Always,
                },
            ]
        })
        .collect();
    probes.report.families.push(FamilyReport {
        id: FAMILY,
        description: "duration of each subscriber's invalidation callbacks (e.g. KVM's invalidate_range_start)",
        required: false,
        alternatives: vec![AlternativeReport {
            name: "kprobe",
            mode: Mode::Kprobe,
            status,
            reason,
            targets: names,
            hooks,
            degraded: if late {
                "kprobes in every mode: subscriber callbacks live in modules, and aya 0.14 attaches fentry to \
                 vmlinux functions only; callbacks first seen after start-up are timed from the sweep that meets them"
            } else {
                "kprobes in every mode: subscriber callbacks live in modules, and aya 0.14 attaches fentry to \
                 vmlinux functions only; callbacks first seen after start-up are not timed (--probes.late-callbacks)"
            },
        }],
    });
    timer
}

/// Loads both programs and attaches them to every target it can; the targets attached and why others were not.
/// Without `late`, no target attached is an error.
fn load_and_attach(probes: &mut Probes, targets: Vec<Target>, late: bool) -> Result<(CallbackTimer, String), String> {
    let e = |e: &dyn std::error::Error| e.to_string();
    for program in [ENTRY, RETURN] {
        let p = kprobe(probes, program)?;
        p.load().map_err(|x| format!("{program}: {}", e(&x)))?;
    }
    let (mut attached, mut failures) = (Vec::new(), Vec::new());
    for t in targets {
        let entry = kprobe(probes, ENTRY)?.attach(&t.symbol, 0);
        let ret = entry.is_ok().then(|| kprobe(probes, RETURN).map(|p| p.attach(&t.symbol, 0)));
        match (entry, ret) {
            (Ok(_), Some(Ok(Ok(_)))) => attached.push(t),
            (Ok(id), _) => {
                let _ = kprobe(probes, ENTRY).map(|p| p.detach(id));
                failures.push(format!("{}: kretprobe failed", t.symbol));
            }
            (Err(x), _) => failures.push(format!("{}: {}", t.symbol, e(&x))),
        }
    }
    if attached.is_empty() && !late {
        return Err(failures.join("; "));
    }
    let late = match late {
        true => {
            let mut fd = |program| -> Result<ProgramFd, String> {
                let p = kprobe(probes, program)?;
                p.fd().and_then(|fd| fd.try_clone().map_err(Into::into)).map_err(|x| format!("{program}: {x}"))
            };
            let (entry, ret) = (fd(ENTRY)?, fd(RETURN)?);
            Some(Late { entry, ret, events: Vec::new(), failed: Default::default() })
        }
        false => None,
    };
    let map = probes.take_map(names::CALLBACK_STATS).map_err(|x| format!("{x:#}"))?;
    let stats = map.try_into().map_err(|x: aya::maps::MapError| e(&x))?;
    Ok((CallbackTimer { stats, targets: attached, late }, failures.join("; ")))
}

fn kprobe<'a>(probes: &'a mut Probes, program: &str) -> Result<&'a mut KProbe, String> {
    let p = probes.ebpf_mut().program_mut(program).ok_or(format!("{program} missing"))?;
    p.try_into().map_err(|x: aya::programs::ProgramError| x.to_string())
}

/// The target whose function `ip` (as `bpf_get_func_ip` reports it in a kprobe) belongs to.
pub fn target_of(targets: &[Target], ip: u64) -> Option<&Target> {
    targets.iter().find(|t| ip >= t.address && ip < t.address + IP_SLACK)
}

impl CallbackTimer {
    /// The addresses being timed.
    pub fn addresses(&self) -> std::collections::BTreeSet<u64> {
        self.targets.iter().map(|t| t.address).collect()
    }

    /// Times the inventory's callbacks that are not timed yet (`--probes.late-callbacks`; a no-op without it). A
    /// target whose address now names another function (a module unloaded and another loaded there) is timed
    /// under its new name.
    pub fn extend(&mut self, inv: &Inventory, symbols: &Symbols) {
        let Some(late) = &mut self.late else { return };
        for t in targets(inv, symbols) {
            if late.failed.contains(&t.address)
                || self.targets.iter().any(|have| have.address == t.address && have.symbol == t.symbol)
            {
                continue;
            }
            let attach = |program: &ProgramFd, retprobe| {
                crate::probes::perf_kprobe::attach(program.as_fd(), t.address, retprobe)
            };
            let both = || attach(&late.entry, false).and_then(|entry| Ok([entry, attach(&late.ret, true)?]));
            match crate::privileges::with_permitted_raised(both).and_then(|r| r) {
                Ok(events) => {
                    tracing::info!(
                        symbol = t.symbol,
                        subscriber = t.subscriber,
                        callback = t.callback,
                        "timing a subscriber callback met after start-up"
                    );
                    late.events.extend(events);
                    self.targets.retain(|have| have.address != t.address);
                    self.targets.push(t);
                }
                Err(e) => {
                    tracing::warn!(symbol = t.symbol, "cannot time a subscriber callback met after start-up: {e}");
                    late.failed.insert(t.address);
                }
            }
        }
    }

    /// `(subscriber, callback)` → summed statistics.
    pub fn read(&self) -> BTreeMap<(String, &'static str), BracketStats> {
        let mut out: BTreeMap<(String, &'static str), BracketStats> = BTreeMap::new();
        for entry in self.stats.iter() {
            let Ok((ip, per_cpu)) = entry else { continue };
            let Some(t) = target_of(&self.targets, ip) else {
                tracing::debug!(ip = format!("{ip:#x}"), "callback timing for an unknown address");
                continue;
            };
            let total = out.entry((t.subscriber.clone(), t.callback)).or_default();
            for s in per_cpu.iter() {
                total.merge(s);
            }
        }
        out
    }
}
