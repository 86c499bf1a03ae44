//! Scrape-time collection: reads the aggregation maps and sums the per-CPU values into a
//! [`Snapshot`]. Nothing is accumulated in user space, so a restart loses nothing that the
//! kernel maps still hold and a scrape never sees half-updated totals of one CPU.

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use mmuscope_abi::{
    BracketKey, BracketStats, CgroupKey, ChangePteCounts, CountBytes, Counter, CrossKey, DoubleKey, ForkStats,
    IntervalKey, KvmUnmapKey, SecondaryKey, SubscriberSlot, names,
};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{
    cgroup_maps::{self, ByCgroup, add_change_pte, add_count_bytes, add_fork_stats, add_u64, for_each_map},
    probes::Probes,
};

mod batch;
mod prune;

/// The `map` label of the counters' read errors; the per-cgroup maps' labels are in [`cgroup_maps::MAPS`].
const COUNTERS_LABEL: &str = "counters";
/// Every map a snapshot reads: the per-cgroup maps, then the counters.
const READ_MAPS: usize = cgroup_maps::MAPS.len() + 1;

macro_rules! maps_and_snapshot {
    ($($field:ident: $name:literal, $label:literal, $key:ty, $value:ty, $merge:path;)*) => {
        /// The maps the collector reads.
        pub struct Maps {
            $($field: PerCpuHashMap<MapData, $key, $value>,)*
            counters: PerCpuArray<MapData, u64>,
            /// The subscriber slots (see [`mmuscope_abi::subscriber_mask`]).
            slots: aya::maps::HashMap<MapData, u32, SubscriberSlot>,
            /// `max_entries` of the aggregation maps, for `map_capacity`.
            pub stats_capacity: u32,
            /// Failed reads per map since start: the per-cgroup maps in list order, then the counters.
            read_errors: [AtomicU64; READ_MAPS],
        }

        /// Everything one scrape reports, summed over CPUs: one field per per-cgroup map
        /// ([`cgroup_maps::for_each_map`]), and the global counters.
        #[derive(Debug, Default)]
        pub struct Snapshot {
            $(pub $field: Vec<($key, $value)>,)*
            pub counters: [u64; Counter::COUNT as usize],
            /// `(slot, callback)` of every subscriber slot the programs handed out.
            pub subscriber_slots: Vec<(u32, u64)>,
            /// The `subscriber` label of every mask in `brackets` and `doubles`, named by the exporter
            /// (`crate::export::Exporter`) after the read; empty until then.
            pub subscriber_labels: std::collections::BTreeMap<u32, String>,
        }

        impl Snapshot {
            /// `(key flags, cgroup id)` of every aggregated key, for label resolution.
            pub fn cgroup_ids(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
                std::iter::empty()$(.chain(self.$field.iter().map(|(k, _)| k.cgroup())))*
            }

            /// One default value for each of every map's [`ByCgroup::sample_keys`], for the metrics reference.
            pub fn sample() -> Self {
                Self {
                    $($field: <$key as ByCgroup>::sample_keys()
                        .into_iter()
                        .map(|k| (k, <$value as Default>::default()))
                        .collect(),)*
                    ..Default::default()
                }
            }

            /// Keeps only the keys whose `(flags, cgroup id)` passes `keep` (drops deleted cgroups after their TTL).
            pub fn retain_cgroups(&mut self, mut keep: impl FnMut(u32, u64) -> bool) {
                $(self.$field.retain(|(k, _)| {
                    let (flags, id) = k.cgroup();
                    keep(flags, id)
                });)*
            }
        }

        impl Maps {
            pub fn take(probes: &mut Probes, stats_capacity: u32) -> anyhow::Result<Self> {
                Ok(Self {
                    $($field: probes.take_map($name)?.try_into()?,)*
                    counters: probes.take_map(names::COUNTERS)?.try_into()?,
                    slots: probes.take_map(names::SUBSCRIBER_SLOTS)?.try_into()?,
                    read_errors: Default::default(),
                    stats_capacity,
                })
            }

            /// Reads every map. A map that cannot be read is counted (per map) and the snapshot fails with the first
            /// error, after the other maps were tried, so each failing map shows in
            /// [`read_errors`](Self::read_errors).
            pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
                let mut first = None;
                let mut index = 0;
                let mut snap = Snapshot::default();
                $(
                    snap.$field = self.counted(index, batch::summed(&self.$field, $merge), &mut first);
                    index += 1;
                )*
                let counters: anyhow::Result<Vec<u64>> = Counter::ALL
                    .iter()
                    .map(|c| {
                        let per_cpu = self.counters.get(&(*c as u32), 0)?;
                        Ok(per_cpu.iter().fold(0u64, |a, v| a.saturating_add(*v)))
                    })
                    .collect();
                for (c, total) in Counter::ALL.iter().zip(self.counted(index, counters, &mut first)) {
                    snap.counters[*c as usize] = total;
                }
                // A slot is written once and never removed: a failed read only leaves masks `unknown` this time.
                snap.subscriber_slots = self.slots.iter().filter_map(Result::ok).map(|(k, v)| (k, v.callback)).collect();
                match first {
                    Some(e) => Err(e),
                    None => Ok(snap),
                }
            }

            /// Deletes every key whose `(flags, cgroup id)` is `dead`; returns how many were deleted.
            pub fn remove_cgroups(&mut self, dead: impl Fn(u32, u64) -> bool) -> usize {
                0 $(+ prune::remove(&mut self.$field, &dead))*
            }
        }
    };
}
for_each_map!(maps_and_snapshot);

impl Maps {
    /// `result`'s value, or the default after counting the failure of map `index` (the first error is kept).
    fn counted<T: Default>(&self, index: usize, result: anyhow::Result<T>, first: &mut Option<anyhow::Error>) -> T {
        result.unwrap_or_else(|e| {
            self.read_errors[index].fetch_add(1, Ordering::Relaxed);
            if first.is_none() {
                *first = Some(e.context(format!("reading map {}", read_map_label(index))));
            }
            T::default()
        })
    }

    /// Failed reads per map since start (every map listed, 0 included).
    pub fn read_errors(&self) -> Vec<(&'static str, u64)> {
        self.read_errors.iter().enumerate().map(|(i, n)| (read_map_label(i), n.load(Ordering::Relaxed))).collect()
    }
}

/// The `map` label of read-error slot `index`.
fn read_map_label(index: usize) -> &'static str {
    cgroup_maps::MAPS.get(index).map_or(COUNTERS_LABEL, |m| m.label)
}

impl Snapshot {
    /// Every subscriber mask of the snapshot's keys.
    pub fn subscriber_masks(&self) -> std::collections::BTreeSet<u32> {
        let brackets = self.brackets.iter().map(|(k, _)| k.subscribers);
        brackets.chain(self.doubles.iter().map(|(k, _)| k.subscribers)).collect()
    }

    /// The `subscriber` label of `mask` (named by the exporter; `unknown` if it was not).
    pub fn subscriber(&self, mask: u32) -> &str {
        self.subscriber_labels.get(&mask).map_or("unknown", String::as_str)
    }
}
