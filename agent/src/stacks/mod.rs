//! On-demand kernel stacks of invalidations, double notifications and eager fork copies (`/api/v1/stacks`,
//! `mmuscope stacks`).
//!
//! The programs that count those events carry a capture step that costs one load and a branch while off
//! (`agent-ebpf/programs/src/stacks.rs`). A request arms it by writing the [`StackFilter`] into the one-slot map
//! of the object's `.data.stacks` section — a map update on an fd the agent holds since start-up, which needs no
//! capability after the drop — waits, disarms, reads the per-stack counts and the kernel stacks, and empties both
//! maps. One request at a time ([`Stacks::begin`]): the filter is a single global. Kernel addresses are named from
//! the start-up snapshot of kallsyms ([`SymbolSnapshot`]).

mod fold;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Mutex,
};

use anyhow::Context;
use aya::maps::{Array, HashMap as KernelHashMap, MapData, PerCpuHashMap};
pub use fold::{NamedStack, folded, svg};
use mmuscope_abi::{STACK_DEPTH, STACK_LOST, StackFilter, StackKey, StackKind, names};

use crate::{kernel::symbols::SymbolSnapshot, probes::Probes};

/// The API name of a kind.
pub fn kind_name(kind: StackKind) -> &'static str {
    match kind {
        StackKind::Invalidation => "invalidation",
        StackKind::DoubleNotification => "double_notification",
        StackKind::ForkCopy => "fork_copy",
    }
}

/// The kind of an API name.
pub fn kind_of(name: &str) -> Option<StackKind> {
    StackKind::ALL.into_iter().find(|k| kind_name(*k) == name)
}

/// What a request captures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Bits of [`StackKind::bit`].
    pub kinds: u32,
    /// Owner cgroup id, 0 for all.
    pub cgroup_id: u64,
}

/// One aggregated stack as read from the kernel: addresses innermost first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawStack {
    pub key: StackKey,
    pub addrs: Vec<u64>,
    pub count: u64,
}

/// What a request collected.
#[derive(Debug, Default)]
pub struct Collected {
    pub stacks: Vec<RawStack>,
    /// Events whose stack could not be stored (the map of 1024 stacks full, or the stack unreadable).
    pub lost: u64,
}

struct Maps {
    filter: Array<MapData, StackFilter>,
    /// Frames by stack id, innermost first, 0 after the last (`agent-ebpf/programs/src/stacks.rs`).
    traces: KernelHashMap<MapData, u32, [u64; STACK_DEPTH]>,
    counts: PerCpuHashMap<MapData, StackKey, u64>,
}

/// The stack maps and the symbol snapshot.
pub struct Stacks {
    maps: Mutex<Maps>,
    /// Held by the running request.
    busy: Slot,
    symbols: SymbolSnapshot,
}

/// A running request: disarms the capture and empties the maps when dropped, however the request ends (finished,
/// client gone, error).
pub struct Session<'a> {
    stacks: &'a Stacks,
}

#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    #[error("another stack request is running (one at a time: the capture filter is global); retry when it ends")]
    Busy,
    #[error("arming the stack capture failed: {0}")]
    Map(String),
}

impl Stacks {
    /// Takes the stack maps out of the loaded object (while privileged), with the start-up symbol snapshot.
    pub fn take(probes: &mut Probes, symbols: SymbolSnapshot) -> anyhow::Result<Self> {
        let filter = Array::try_from(probes.take_map(names::STACK_FILTER)?).context(names::STACK_FILTER)?;
        let traces = KernelHashMap::try_from(probes.take_map(names::STACK_TRACES)?).context(names::STACK_TRACES)?;
        let counts = PerCpuHashMap::try_from(probes.take_map(names::STACK_COUNTS)?).context(names::STACK_COUNTS)?;
        Ok(Self { maps: Mutex::new(Maps { filter, traces, counts }), busy: Slot::default(), symbols })
    }

    /// Arms the capture with `filter`, unless a request runs already.
    pub fn begin(&self, filter: Filter) -> Result<Session<'_>, BeginError> {
        if !self.busy.take() {
            return Err(BeginError::Busy);
        }
        let session = Session { stacks: self };
        let mut maps = self.lock();
        maps.clear(); // leftovers of a request whose disarm failed
        let value = StackFilter { armed: 1, kinds: filter.kinds, cgroup_id: filter.cgroup_id };
        maps.filter.set(0, value, 0).map_err(|e| BeginError::Map(e.to_string()))?;
        drop(maps);
        Ok(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Maps> {
        self.maps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of kernel addresses (absent: no symbol, see [`Self::symbols_unavailable`]).
    pub fn symbolize(&self, addrs: &HashSet<u64>) -> std::io::Result<BTreeMap<u64, String>> {
        self.symbols.resolve(addrs)
    }

    /// Why addresses stay raw, when they do.
    pub fn symbols_unavailable(&self) -> Option<&str> {
        self.symbols.unavailable()
    }
}

impl Session<'_> {
    /// Disarms and reads what was captured (the maps are emptied when the session is dropped).
    pub fn collect(&self) -> anyhow::Result<Collected> {
        let mut maps = self.stacks.lock();
        maps.disarm()?;
        maps.read()
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let mut maps = self.stacks.lock();
        if let Err(e) = maps.disarm() {
            tracing::error!("disarming the stack capture failed: {e:#}");
        }
        maps.clear();
        drop(maps);
        self.stacks.busy.give_back();
    }
}

/// One request at a time.
#[derive(Default)]
struct Slot(Mutex<bool>);

impl Slot {
    /// Takes the slot; false if it is taken.
    fn take(&self) -> bool {
        let mut taken = self.0.lock().unwrap_or_else(|e| e.into_inner());
        !std::mem::replace(&mut *taken, true)
    }

    fn give_back(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = false;
    }
}

impl Maps {
    fn disarm(&mut self) -> anyhow::Result<()> {
        self.filter.set(0, StackFilter::default(), 0).context("writing the stack filter")
    }

    fn read(&self) -> anyhow::Result<Collected> {
        let mut counts: HashMap<StackKey, u64> = HashMap::new();
        for item in self.counts.iter() {
            let (key, values) = item.context("reading the stack counts")?;
            *counts.entry(key).or_default() += values.iter().sum::<u64>();
        }
        let mut out = Collected::default();
        for (key, count) in counts {
            if key.stack_id == STACK_LOST {
                out.lost += count;
                continue;
            }
            match self.traces.get(&key.stack_id, 0) {
                Ok(frames) => {
                    let addrs = frames.iter().copied().take_while(|a| *a != 0).collect();
                    out.stacks.push(RawStack { key, addrs, count })
                }
                // Replaced or never stored: counted as lost rather than shown under another stack.
                Err(_) => out.lost += count,
            }
        }
        out.stacks.sort_by(|a, b| b.count.cmp(&a.count).then(a.key.stack_id.cmp(&b.key.stack_id)));
        Ok(out)
    }

    /// Empties both maps (best effort: a key that cannot be deleted is logged).
    fn clear(&mut self) {
        let keys: Vec<StackKey> = self.counts.keys().filter_map(Result::ok).collect();
        for k in keys {
            if let Err(e) = self.counts.remove(&k) {
                tracing::warn!("emptying the stack counts: {e}");
            }
        }
        let ids: Vec<u32> = self.traces.keys().filter_map(Result::ok).collect();
        for id in ids {
            if let Err(e) = self.traces.remove(&id) {
                tracing::warn!("emptying the stack map: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_at_a_time() {
        let slot = Slot::default();
        assert!(slot.take());
        assert!(!slot.take(), "a second request while one runs");
        slot.give_back();
        assert!(slot.take(), "free again once the first ended");
    }

    #[test]
    fn kind_names_round_trip() {
        for k in StackKind::ALL {
            assert_eq!(kind_of(kind_name(k)), Some(k));
        }
        assert_eq!(kind_of("brackets"), None);
    }
}
