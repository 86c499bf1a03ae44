//! Removing the keys of deleted cgroups from the kernel maps once their series have expired (`--cgroups.deleted-ttl`).
//! Without it the preallocated maps fill with dead keys under cgroup churn, and then the events of new cgroups are
//! dropped (`map_update_errors_total`) although no live cgroup needs the room.

use aya::{
    Pod,
    maps::{MapData, PerCpuHashMap},
};

use crate::cgroup_maps::ByCgroup;

/// Deletes every key of `map` whose `(flags, cgroup id)` is `dead`; returns how many were deleted.
pub(super) fn remove<K: Pod + ByCgroup, V: Pod>(
    map: &mut PerCpuHashMap<MapData, K, V>,
    dead: &dyn Fn(u32, u64) -> bool,
) -> usize {
    let keys: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| dead(k.cgroup().0, k.cgroup().1)).collect();
    // A key removed meanwhile (ENOENT) is as good as removed by us; nothing else can fail on our own map fd.
    keys.iter().filter(|k| map.remove(k).is_ok()).count()
}
