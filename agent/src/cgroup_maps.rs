//! The per-cgroup aggregation maps, declared once: each row names the map in the eBPF object, the `map` label of
//! `mmuscope_map_read_errors_total`, its key and value types and how per-CPU values merge. Everything that handles
//! these maps one by one follows this list: their size (`--map.stats-entries`) and pinning (`crate::probes`), the
//! snapshot read, its cgroup ids and TTL filter, and the removal of deleted cgroups' keys (`crate::collect`).
//!
//! A new per-cgroup map is one row in [`for_each_map`]: its key type needs `flags` and `cgroup_id` ([`ByCgroup`]).
//! The same rows give the sample snapshot of the metrics reference (`Snapshot::sample`).

use mmuscope_abi::{
    BracketKey, BracketStats, CgroupKey, ChangePteCounts, CountBytes, CrossKey, DoubleKey, DoubleKind, ForkStats,
    IntervalKey, KvmUnmapKey, SecondaryKey,
};

/// Calls `$then!` with every per-cgroup map as `field: "NAME", "label", Key, Value, merge;` (`"NAME"`: the map's
/// static in `agent-ebpf/programs/src/`, in the file of the programs that write it, named only here on this side
/// and held against the object, with its sizes and type, by `probes::object_tests`; `merge(&mut total, &value)`
/// folds one CPU's value into the total), in the order of [`MAPS`].
macro_rules! for_each_map {
    ($then:ident) => {
        $then! {
            brackets: "BRACKET_STATS", "bracket_stats", BracketKey, BracketStats, BracketStats::merge;
            kvm_unmaps: "KVM_UNMAP_COUNTS", "kvm_unmap_counts", KvmUnmapKey, u64, add_u64;
            forks: "FORK_STATS", "fork_stats", CgroupKey, ForkStats, add_fork_stats;
            hugetlb_forks: "FORK_HUGETLB_STATS", "fork_hugetlb_stats", CgroupKey, CountBytes, add_count_bytes;
            secondary: "SECONDARY_STATS", "secondary_stats", SecondaryKey, CountBytes, add_count_bytes;
            change_pte: "CHANGE_PTE_STATS", "change_pte_stats", CgroupKey, ChangePteCounts, add_change_pte;
            doubles: "DOUBLE_STATS", "double_stats", DoubleKey, CountBytes, add_count_bytes;
            cross: "CROSS_STATS", "cross_stats", CrossKey, u64, add_u64;
            // Interval-reader waits per (owner cgroup, `ops->invalidate` address).
            interval_waits: "INTERVAL_WAITS", "interval_waits", IntervalKey, BracketStats, BracketStats::merge;
            // Read collisions per (owner cgroup, `ops->invalidate` address).
            interval_collisions: "INTERVAL_COLLISIONS", "interval_collisions", IntervalKey, u64, add_u64;
            interval_hits: "INTERVAL_HITS", "interval_hits", CgroupKey, u64, add_u64;
            hmm_busy: "HMM_BUSY", "hmm_busy", CgroupKey, u64, add_u64;
        }
    };
}
pub(crate) use for_each_map;

/// One per-cgroup map as the loader and the pinning check see it.
pub struct MapSpec {
    /// Its name in the eBPF object.
    pub name: &'static str,
    /// The `map` label of its read errors.
    pub label: &'static str,
    pub key_size: usize,
    pub value_size: usize,
}

macro_rules! specs {
    ($($field:ident: $name:literal, $label:literal, $key:ty, $value:ty, $merge:path;)*) => {
        /// Every per-cgroup map (all per-CPU hash maps sized by `--map.stats-entries`).
        pub const MAPS: &[MapSpec] = &[$(MapSpec {
            name: $name,
            label: $label,
            key_size: size_of::<$key>(),
            value_size: size_of::<$value>(),
        }),*];
    };
}
for_each_map!(specs);

/// `(key flags, cgroup id)` of a map key: which cgroup, in which hierarchy, the entry counts for.
pub trait ByCgroup: Sized {
    fn cgroup(&self) -> (u32, u64);

    /// Keys of cgroup 1 that, one entry each, make every metric family built from the map show a series (for the
    /// metrics reference): one default key, unless a field of the key chooses the family.
    fn sample_keys() -> Vec<Self>;
}

macro_rules! by_cgroup {
    ($($t:ty),*) => {$(
        impl ByCgroup for $t {
            fn cgroup(&self) -> (u32, u64) {
                (self.flags, self.cgroup_id)
            }

            fn sample_keys() -> Vec<Self> {
                vec![Self { cgroup_id: 1, ..Default::default() }]
            }
        }
    )*};
}
by_cgroup!(BracketKey, CgroupKey, SecondaryKey, CrossKey, KvmUnmapKey, IntervalKey);

impl ByCgroup for DoubleKey {
    fn cgroup(&self) -> (u32, u64) {
        (self.flags, self.cgroup_id)
    }

    /// Every kind: `Avoided` goes to a family of its own.
    fn sample_keys() -> Vec<Self> {
        DoubleKind::ALL.iter().map(|k| Self { cgroup_id: 1, kind: *k as u32, ..Default::default() }).collect()
    }
}

pub fn add_u64(total: &mut u64, v: &u64) {
    *total = total.saturating_add(*v);
}

pub fn add_count_bytes(total: &mut CountBytes, v: &CountBytes) {
    total.count = total.count.saturating_add(v.count);
    total.bytes = total.bytes.saturating_add(v.bytes);
}

pub fn add_change_pte(total: &mut ChangePteCounts, v: &ChangePteCounts) {
    total.bracket = total.bracket.saturating_add(v.bracket);
    total.outside = total.outside.saturating_add(v.outside);
}

pub fn add_fork_stats(total: &mut ForkStats, v: &ForkStats) {
    total.forks += v.forks;
    total.forks_with_copies += v.forks_with_copies;
    total.copies += v.copies;
    total.thp_splits += v.thp_splits;
    total.unobserved += v.unobserved;
}
