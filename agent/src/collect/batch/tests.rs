//! Batch reads against a real per-CPU hash map (needs CAP_BPF; skipped loudly without it, a failure in CI).

use std::os::fd::{FromRawFd, OwnedFd};

use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};

use super::*;

/// 12 bytes: the kernel pads each CPU's slot to 16, which the reader must step over.
type Value = [u32; 3];

fn per_cpu_hash(max_entries: u32) -> Option<PerCpuHashMap<MapData, u64, Value>> {
    #[repr(C)]
    struct CreateAttr {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        map_flags: u32,
    }
    const BPF_MAP_TYPE_PERCPU_HASH: u32 = 5;
    let attr = CreateAttr {
        map_type: BPF_MAP_TYPE_PERCPU_HASH,
        key_size: 8,
        value_size: size_of::<Value>() as u32,
        max_entries,
        map_flags: 0,
    };
    // SAFETY: BPF_MAP_CREATE (0) reads `size` bytes of attr; the rest of bpf_attr is taken as zero.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, &attr, size_of::<CreateAttr>()) };
    if fd < 0 {
        let err = io::Error::last_os_error();
        // CI runs as root: there a map that cannot be created is a broken prerequisite, not a reason to pass.
        assert!(!mmuscope_ci::in_ci(), "cannot create a BPF map in CI ({err}); the batch reads went untested");
        eprintln!("SKIPPED: cannot create a BPF map here ({err})");
        return None;
    }
    // SAFETY: a new fd that nothing else owns.
    let data = MapData::from_fd(unsafe { OwnedFd::from_raw_fd(fd as i32) }).expect("map data");
    Some(Map::PerCpuHashMap(data).try_into().expect("per-CPU hash"))
}

#[test]
fn batch_read_equals_the_per_key_walk_and_the_values_written() {
    // More keys than one chunk, so the batch token is carried across calls.
    let n = (CHUNK * 3 + 17) as u64;
    let Some(mut map) = per_cpu_hash(n as u32 + 100) else { return };
    let cpus = aya::util::nr_cpus().expect("cpus");
    for key in 0..n {
        let values: Vec<Value> = (0..cpus).map(|cpu| [key as u32, cpu as u32 + 1, 7]).collect();
        map.insert(key * 1000, PerCpuValues::try_from(values).expect("values"), 0).expect("insert");
    }
    let add = |s: &mut [u64; 3], v: &Value| {
        for (a, b) in s.iter_mut().zip(v) {
            *a += u64::from(*b);
        }
    };
    let mut batch = batched(&map, &add).expect("batch read");
    let mut walk = per_key(&map, &add).expect("per-key walk");
    batch.sort_unstable_by_key(|e| e.0);
    walk.sort_unstable_by_key(|e| e.0);
    assert_eq!(batch.len(), n as usize);
    assert_eq!(batch, walk);
    let c = cpus as u64;
    for (key, sum) in &batch {
        assert_eq!(*sum, [key / 1000 * c, c * (c + 1) / 2, 7 * c], "key {key}");
    }
}

#[test]
fn an_empty_map_reads_as_empty() {
    let Some(map) = per_cpu_hash(16) else { return };
    let read = summed(&map, |s: &mut u64, v: &Value| *s += u64::from(v[0])).expect("read");
    assert!(read.is_empty());
}
