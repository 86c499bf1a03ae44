//! Per-subscriber callback latency (`subscriber_callback_duration_seconds{subscriber,callback}`).
//!
//! At start-up, after the first sweep, the agent attaches one kprobe/kretprobe pair (programs in
//! `agent-ebpf/programs/src/callbacks.rs`) to every invalidation callback the inventory names
//! (`invalidate_range_start`, `_end`, and the secondary-TLB one), plus KVM's callbacks when
//! kallsyms has them (KVM is loaded but no VM runs yet). Subscriber callbacks mostly live in
//! modules (kvm, iommu and GPU drivers); aya 0.14 loads fentry programs against vmlinux BTF
//! only, so kprobes are used in every mode that has them (none on kernels without kprobes).
//!
//! Attaching needs privileges the agent drops right after start-up, so a callback that first
//! appears later (a module loaded afterwards, e.g. the first GPU user) is listed by the
//! inventory but not timed until the agent restarts; the plan report names what was attached.

use std::collections::BTreeMap;

use aya::{
    maps::{MapData, PerCpuHashMap},
    programs::KProbe,
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
const TIMED: &[&str] =
    &["invalidate_range_start", "invalidate_range_end", "invalidate_range", "arch_invalidate_secondary_tlbs"];
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
pub fn attach(probes: &mut Probes, inv: &Inventory, symbols: &Symbols, forced: Option<Mode>) -> Option<CallbackTimer> {
    let wanted = targets(inv, symbols);
    let names: Vec<&'static str> = wanted.iter().map(|t| &*Box::leak(t.symbol.clone().into_boxed_str())).collect();
    let kprobes = probes.report.capabilities.kprobes.clone();
    let (status, reason, timer) = if forced == Some(Mode::Tracepoint) {
        (Status::Excluded, "--mode tracepoint".to_string(), None)
    } else if let Err(why) = kprobes {
        (Status::Unavailable, why, None)
    } else if wanted.is_empty() {
        (Status::Unavailable, "no subscriber callback known at start-up (no VM or other subscriber yet)".into(), None)
    } else {
        match load_and_attach(probes, wanted.clone()) {
            Ok((timer, partial)) => (Status::Attached, partial, Some(timer)),
            Err(why) => (Status::Failed, why, None),
        }
    };
    let hooks = names
        .iter()
        .flat_map(|&target| {
            [
                HookReport { program: ENTRY.to_string(), hook: Hook::KProbe, target, while_pinned: false },
                HookReport { program: RETURN.to_string(), hook: Hook::KRetProbe, target, while_pinned: false },
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
            degraded: "kprobes in every mode: subscriber callbacks live in modules, and aya 0.14 attaches fentry to \
                       vmlinux functions only; callbacks first seen after start-up are not timed",
        }],
    });
    timer
}

/// Loads both programs and attaches them to every target it can; the targets attached and why others were not.
fn load_and_attach(probes: &mut Probes, targets: Vec<Target>) -> Result<(CallbackTimer, String), String> {
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
    if attached.is_empty() {
        return Err(failures.join("; "));
    }
    let map = probes.take_map(names::CALLBACK_STATS).map_err(|x| format!("{x:#}"))?;
    let stats = map.try_into().map_err(|x: aya::maps::MapError| e(&x))?;
    Ok((CallbackTimer { stats, targets: attached }, failures.join("; ")))
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
