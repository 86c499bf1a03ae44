//! `--pin DIR`: the aggregation maps live in bpffs under `DIR`, so their counters continue across
//! a restart of the agent (a pinned map outlives the process). Without `--pin` nothing is pinned
//! and every map goes away with the agent.
//!
//! A pinned map is reused only if it is what this build would create (type, key and value size,
//! `max_entries`); anything else is refused with the file and the difference named, never reused
//! with a wrong layout and never silently replaced (that would lose its counts).

use std::path::{Path, PathBuf};

use aya::maps::{MapData, MapType};
use mmuscope_abi::names;

use crate::cgroup_maps;

/// bpffs' `statfs` magic.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The maps whose contents are the agent's counters: `(name, type, key size, value size, sized by --map.stats-entries)`,
/// and the subscriber slots, which give the counters' subscriber masks their meaning.
fn persistent() -> impl Iterator<Item = (&'static str, MapType, usize, usize, bool)> {
    let per_cgroup = cgroup_maps::MAPS.iter().map(|m| (m.name, MapType::PerCpuHash, m.key_size, m.value_size, true));
    per_cgroup.chain([
        (names::COUNTERS, MapType::PerCpuArray, size_of::<u32>(), size_of::<u64>(), false),
        (names::SUBSCRIBER_SLOTS, MapType::Hash, size_of::<u32>(), size_of::<mmuscope_abi::SubscriberSlot>(), false),
        (names::SUBSCRIBER_BITS, MapType::Hash, size_of::<u64>(), size_of::<u32>(), false),
    ])
}

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("--pin {0}: not on a bpffs mount (mount -t bpf bpf /sys/fs/bpf, then use a directory below it)")]
    NotBpffs(PathBuf),
    #[error("--pin {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "--pin: {path} was pinned by an agent with a different map layout ({what}); remove it to start from zero \
         (its counts are lost), or run the agent build that pinned it"
    )]
    Mismatch { path: PathBuf, what: String },
    #[error("--pin: cannot open {0}: {1}")]
    Open(PathBuf, String),
}

/// `(map name, pin path)` for every persistent map, after checking `dir` and any map already pinned there.
pub fn plan(dir: &Path, stats_entries: u32) -> Result<Vec<(&'static str, PathBuf)>, PinError> {
    std::fs::create_dir_all(dir).map_err(|e| PinError::Io(dir.to_owned(), e))?;
    if !is_bpffs(dir).map_err(|e| PinError::Io(dir.to_owned(), e))? {
        return Err(PinError::NotBpffs(dir.to_owned()));
    }
    let mut out = Vec::new();
    for (name, kind, key, value, sized) in persistent() {
        let path = dir.join(name);
        if path.exists() {
            let map = MapData::from_pin(&path).map_err(|e| PinError::Open(path.clone(), e.to_string()))?;
            let info = map.info().map_err(|e| PinError::Open(path.clone(), e.to_string()))?;
            let found = (info.map_type().ok(), info.key_size() as usize, info.value_size() as usize);
            let mut what = Vec::new();
            if found != (Some(kind), key, value) {
                what.push(format!("type/key/value {found:?}, this build {:?}", (Some(kind), key, value)));
            }
            if sized && info.max_entries() != stats_entries {
                what.push(format!("max_entries {}, --map.stats-entries {stats_entries}", info.max_entries()));
            }
            if !what.is_empty() {
                return Err(PinError::Mismatch { path, what: what.join("; ") });
            }
        }
        out.push((name, path));
    }
    Ok(out)
}

fn is_bpffs(dir: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_outside_bpffs_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("mmuscope-pin-{}", std::process::id()));
        let e = plan(&dir, 4096).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(e.contains("not on a bpffs mount") && e.contains(dir.to_str().unwrap()), "{e}");
    }

    #[test]
    fn every_persistent_map_is_a_counter_map_of_the_object() {
        let names: Vec<_> = persistent().map(|p| p.0).collect();
        assert!(!names.contains(&names::INFLIGHT) && !names.contains(&names::THREADS), "state maps are not pinned");
        assert_eq!(names.iter().collect::<std::collections::HashSet<_>>().len(), names.len());
    }
}
