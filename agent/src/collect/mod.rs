//! Scrape-time collection: reads the aggregation maps and sums the per-CPU values into a
//! [`Snapshot`]. Nothing is accumulated in user space, so a restart loses nothing that the
//! kernel maps still hold and a scrape never sees half-updated totals of one CPU.

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use mmuscope_abi::{
    BracketKey, BracketStats, CgroupKey, CountBytes, Counter, CrossKey, DoubleKey, ForkStats, IntervalKey, KvmUnmapKey,
    SecondaryKey, names,
};

use std::sync::atomic::{AtomicU64, Ordering};

use crate::probes::Probes;

mod batch;
mod prune;

/// The maps a snapshot reads, as the `map` label of `mmuscope_map_read_errors_total`, in [`Maps`] field order.
pub const READ_MAPS: [&str; 10] = [
    "bracket_stats",
    "kvm_unmap_counts",
    "fork_stats",
    "secondary_stats",
    "double_stats",
    "cross_stats",
    "interval_waits",
    "interval_hits",
    "hmm_busy",
    "counters",
];

/// The maps the collector reads.
pub struct Maps {
    brackets: PerCpuHashMap<MapData, BracketKey, BracketStats>,
    kvm_unmaps: PerCpuHashMap<MapData, KvmUnmapKey, u64>,
    forks: PerCpuHashMap<MapData, CgroupKey, ForkStats>,
    secondary: PerCpuHashMap<MapData, SecondaryKey, CountBytes>,
    doubles: PerCpuHashMap<MapData, DoubleKey, CountBytes>,
    cross: PerCpuHashMap<MapData, CrossKey, u64>,
    interval_waits: PerCpuHashMap<MapData, IntervalKey, BracketStats>,
    interval_hits: PerCpuHashMap<MapData, CgroupKey, u64>,
    hmm_busy: PerCpuHashMap<MapData, CgroupKey, u64>,
    counters: PerCpuArray<MapData, u64>,
    /// `max_entries` of the aggregation maps, for `map_capacity`.
    pub stats_capacity: u32,
    /// Failed reads per map since start, indexed like [`READ_MAPS`].
    read_errors: [AtomicU64; READ_MAPS.len()],
}

/// Everything one scrape reports, summed over CPUs.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub brackets: Vec<(BracketKey, BracketStats)>,
    pub kvm_unmaps: Vec<(KvmUnmapKey, u64)>,
    pub forks: Vec<(CgroupKey, ForkStats)>,
    pub secondary: Vec<(SecondaryKey, CountBytes)>,
    pub doubles: Vec<(DoubleKey, CountBytes)>,
    pub cross: Vec<(CrossKey, u64)>,
    /// Interval-reader waits per (owner cgroup, `ops->invalidate` address).
    pub interval_waits: Vec<(IntervalKey, BracketStats)>,
    pub interval_hits: Vec<(CgroupKey, u64)>,
    pub hmm_busy: Vec<(CgroupKey, u64)>,
    pub counters: [u64; Counter::COUNT as usize],
}

impl Snapshot {
    /// `(key flags, cgroup id)` of every aggregated key, for label resolution.
    pub fn cgroup_ids(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let brackets = self.brackets.iter().map(|(k, _)| (k.flags, k.cgroup_id));
        let kvm = self.kvm_unmaps.iter().map(|(k, _)| (k.flags, k.cgroup_id));
        let forks = self.forks.iter().map(|(k, _)| (k.flags, k.cgroup_id));
        let waits = self.interval_waits.iter().map(|(k, _)| (k.flags, k.cgroup_id));
        let hits = self.interval_hits.iter().chain(&self.hmm_busy).map(|(k, _)| (k.flags, k.cgroup_id));
        let secondary = self.secondary.iter().map(|(k, _)| (k.flags, k.cgroup_id));
        let doubles = self.doubles.iter().map(|(k, _)| (k.flags, k.cgroup_id));
        let doubles = doubles.chain(self.cross.iter().map(|(k, _)| (k.flags, k.cgroup_id)));
        brackets.chain(kvm).chain(forks).chain(secondary).chain(doubles).chain(waits).chain(hits)
    }

    /// Keeps only the keys whose `(flags, cgroup id)` passes `keep` (drops deleted cgroups after their TTL). Every
    /// per-cgroup field must be filtered here, as in [`cgroup_ids`](Self::cgroup_ids).
    pub fn retain_cgroups(&mut self, mut keep: impl FnMut(u32, u64) -> bool) {
        self.brackets.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.kvm_unmaps.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.forks.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.secondary.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.doubles.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.cross.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.interval_waits.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.interval_hits.retain(|(k, _)| keep(k.flags, k.cgroup_id));
        self.hmm_busy.retain(|(k, _)| keep(k.flags, k.cgroup_id));
    }
}

impl Maps {
    pub fn take(probes: &mut Probes, stats_capacity: u32) -> anyhow::Result<Self> {
        Ok(Self {
            brackets: probes.take_map(names::BRACKET_STATS)?.try_into()?,
            kvm_unmaps: probes.take_map(names::KVM_UNMAP_COUNTS)?.try_into()?,
            forks: probes.take_map(names::FORK_STATS)?.try_into()?,
            secondary: probes.take_map(names::SECONDARY_STATS)?.try_into()?,
            doubles: probes.take_map(names::DOUBLE_STATS)?.try_into()?,
            cross: probes.take_map(names::CROSS_STATS)?.try_into()?,
            interval_waits: probes.take_map(names::INTERVAL_WAITS)?.try_into()?,
            interval_hits: probes.take_map(names::INTERVAL_HITS)?.try_into()?,
            hmm_busy: probes.take_map(names::HMM_BUSY)?.try_into()?,
            counters: probes.take_map(names::COUNTERS)?.try_into()?,
            read_errors: Default::default(),
            stats_capacity,
        })
    }

    /// Reads every map. A map that cannot be read is counted (per map) and the snapshot fails with the first error,
    /// after the other maps were tried, so each failing map shows in [`read_errors`](Self::read_errors).
    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let mut first = None;
        let mut snap = Snapshot {
            brackets: self.counted(0, batch::summed(&self.brackets, |t: &mut BracketStats, s| t.merge(s)), &mut first),
            kvm_unmaps: self.counted(1, batch::summed(&self.kvm_unmaps, add_u64), &mut first),
            forks: self.counted(
                2,
                batch::summed(&self.forks, |t: &mut ForkStats, s| {
                    t.forks += s.forks;
                    t.forks_with_copies += s.forks_with_copies;
                    t.copies += s.copies;
                    t.thp_splits += s.thp_splits;
                }),
                &mut first,
            ),
            secondary: self.counted(3, batch::summed(&self.secondary, add_count_bytes), &mut first),
            doubles: self.counted(4, batch::summed(&self.doubles, add_count_bytes), &mut first),
            cross: self.counted(5, batch::summed(&self.cross, add_u64), &mut first),
            interval_waits: self.counted(
                6,
                batch::summed(&self.interval_waits, |t: &mut BracketStats, s| t.merge(s)),
                &mut first,
            ),
            interval_hits: self.counted(7, batch::summed(&self.interval_hits, add_u64), &mut first),
            hmm_busy: self.counted(8, batch::summed(&self.hmm_busy, add_u64), &mut first),
            ..Snapshot::default()
        };
        let counters: anyhow::Result<Vec<u64>> = Counter::ALL
            .iter()
            .map(|c| {
                let per_cpu = self.counters.get(&(*c as u32), 0)?;
                Ok(per_cpu.iter().fold(0u64, |a, v| a.saturating_add(*v)))
            })
            .collect();
        for (c, total) in Counter::ALL.iter().zip(self.counted(9, counters, &mut first)) {
            snap.counters[*c as usize] = total;
        }
        match first {
            Some(e) => Err(e),
            None => Ok(snap),
        }
    }

    /// `result`'s value, or the default after counting the failure of map `index` (the first error is kept).
    fn counted<T: Default>(&self, index: usize, result: anyhow::Result<T>, first: &mut Option<anyhow::Error>) -> T {
        result.unwrap_or_else(|e| {
            self.read_errors[index].fetch_add(1, Ordering::Relaxed);
            if first.is_none() {
                *first = Some(e.context(format!("reading map {}", READ_MAPS[index])));
            }
            T::default()
        })
    }

    /// Failed reads per map since start (every map listed, 0 included).
    pub fn read_errors(&self) -> Vec<(&'static str, u64)> {
        READ_MAPS.iter().zip(&self.read_errors).map(|(m, n)| (*m, n.load(Ordering::Relaxed))).collect()
    }
}

fn add_u64(total: &mut u64, v: &u64) {
    *total = total.saturating_add(*v);
}

fn add_count_bytes(total: &mut CountBytes, v: &CountBytes) {
    total.count = total.count.saturating_add(v.count);
    total.bytes = total.bytes.saturating_add(v.bytes);
}
