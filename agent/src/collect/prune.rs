//! Removing the keys of deleted cgroups from the kernel maps once their series have expired (`--cgroups.deleted-ttl`).
//! Without it the preallocated maps fill with dead keys under cgroup churn, and then the events of new cgroups are
//! dropped (`map_update_errors_total`) although no live cgroup needs the room.

use aya::{
    Pod,
    maps::{MapData, PerCpuHashMap},
};
use mmuscope_abi::{BracketKey, CgroupKey, CrossKey, DoubleKey, IntervalKey, KvmUnmapKey, SecondaryKey};

use super::Maps;

/// `(key flags, cgroup id)` of a map key.
trait ByCgroup {
    fn cgroup(&self) -> (u32, u64);
}

macro_rules! by_cgroup {
    ($($t:ty),*) => {$(
        impl ByCgroup for $t {
            fn cgroup(&self) -> (u32, u64) {
                (self.flags, self.cgroup_id)
            }
        }
    )*};
}
by_cgroup!(BracketKey, CgroupKey, SecondaryKey, DoubleKey, CrossKey, KvmUnmapKey, IntervalKey);

impl Maps {
    /// Deletes every key whose `(flags, cgroup id)` is `dead`; returns how many were deleted.
    pub fn remove_cgroups(&mut self, dead: impl Fn(u32, u64) -> bool) -> usize {
        remove(&mut self.brackets, &dead)
            + remove(&mut self.kvm_unmaps, &dead)
            + remove(&mut self.forks, &dead)
            + remove(&mut self.secondary, &dead)
            + remove(&mut self.doubles, &dead)
            + remove(&mut self.cross, &dead)
            + remove(&mut self.interval_waits, &dead)
            + remove(&mut self.interval_hits, &dead)
            + remove(&mut self.hmm_busy, &dead)
    }
}

fn remove<K: Pod + ByCgroup, V: Pod>(map: &mut PerCpuHashMap<MapData, K, V>, dead: &dyn Fn(u32, u64) -> bool) -> usize {
    let keys: Vec<K> = map.keys().filter_map(Result::ok).filter(|k| dead(k.cgroup().0, k.cgroup().1)).collect();
    // A key removed meanwhile (ENOENT) is as good as removed by us; nothing else can fail on our own map fd.
    keys.iter().filter(|k| map.remove(k).is_ok()).count()
}
