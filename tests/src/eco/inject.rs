//! Puts per-cgroup counts straight into a running agent's `KVM_UNMAP_COUNTS` map, so that a test can give thousands
//! of real cgroups activity without thousands of VMs. Test-only: it lives in the test crate and needs root
//! (`BPF_MAP_GET_FD_BY_ID`); the agent has no injection path of its own.
//!
//! The map is found through the agent's own file descriptors (`/proc/<pid>/fdinfo/*` → `map_id`), so another agent
//! on the same host is never touched.

use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
use mmuscope_abi::CgroupKey;

use anyhow::{Context, Result, bail};

/// The kernel keeps 15 bytes of a map's name.
const MAP_NAME: &str = "KVM_UNMAP_COUNT";

/// The agent's map of KVM callback counts per cgroup.
pub fn kvm_unmap_counts(agent_pid: u32) -> Result<PerCpuHashMap<MapData, CgroupKey, u64>> {
    let dir = format!("/proc/{agent_pid}/fdinfo");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
        if let Some(id) =
            text.lines().find_map(|l| l.strip_prefix("map_id:")).and_then(|v| v.trim().parse::<u32>().ok())
        {
            ids.push(id);
        }
    }
    for id in ids {
        let data = MapData::from_id(id).with_context(|| format!("opening map id {id}"))?;
        if data.info().ok().and_then(|i| i.name_as_str().map(str::to_string)).as_deref() == Some(MAP_NAME) {
            let map = Map::from_map_data(data).context("map type")?;
            return PerCpuHashMap::try_from(map).context("KVM_UNMAP_COUNTS is not a per-CPU hash of CgroupKey → u64");
        }
    }
    bail!("agent pid {agent_pid} holds no map named {MAP_NAME}")
}

/// Sets `count` (on CPU 0) for each `(flags, cgroup id)`.
pub fn set_counts(map: &mut PerCpuHashMap<MapData, CgroupKey, u64>, keys: &[(u32, u64)], count: u64) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    for (flags, id) in keys {
        let mut v = vec![0u64; cpus];
        v[0] = count;
        let values = PerCpuValues::try_from(v).context("per-CPU values")?;
        map.insert(CgroupKey { cgroup_id: *id, flags: *flags, _pad: 0 }, values, 0)
            .with_context(|| format!("inserting cgroup id {id}"))?;
    }
    Ok(())
}
