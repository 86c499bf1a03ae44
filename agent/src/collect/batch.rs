//! Reading a whole per-CPU hash map with `BPF_MAP_LOOKUP_BATCH` (Linux 5.6+): one bpf(2) call per chunk of up to
//! [`CHUNK`] keys, instead of two per key (get-next-key, then lookup) as aya's iterator does. At 10k cgroups the
//! per-key walk was ~45 % of a scrape's CPU (BENCHMARKS.md). A kernel that lacks batch operations for the map gets
//! the per-key walk.
//!
//! Like the per-key walk, a batch read is not atomic: keys added or removed during the read may or may not be seen,
//! and each value is read as the programs left it at that moment.

use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::{
    Pod,
    maps::{IterableMap, MapData, PerCpuHashMap},
};

/// Keys asked for per call. Small enough that the zeroed buffers stay cheap for maps with few keys (the values of
/// one key are a latency histogram per CPU); a hash bucket holding more keys than this makes the kernel return
/// ENOSPC with nothing copied, and the chunk then doubles.
const CHUNK: usize = 256;

/// Every entry of `map` with its per-CPU values folded by `add` into one `S`.
pub fn summed<K: Pod, V: Pod, S: Default>(
    map: &PerCpuHashMap<MapData, K, V>,
    add: impl Fn(&mut S, &V),
) -> anyhow::Result<Vec<(K, S)>> {
    match batched(map, &add) {
        Ok(entries) => Ok(entries),
        Err(e) if unsupported(&e) => per_key(map, &add),
        Err(e) => Err(anyhow::Error::new(e).context("BPF_MAP_LOOKUP_BATCH")),
    }
}

/// EINVAL from a kernel without the command, EOPNOTSUPP / ENOTSUPP (524) from a map type without batch support.
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP | 524))
}

fn per_key<K: Pod, V: Pod, S: Default>(
    map: &PerCpuHashMap<MapData, K, V>,
    add: &impl Fn(&mut S, &V),
) -> anyhow::Result<Vec<(K, S)>> {
    let mut out = Vec::new();
    for entry in map.iter() {
        let (key, per_cpu) = entry?;
        let mut total = S::default();
        per_cpu.iter().for_each(|v| add(&mut total, v));
        out.push((key, total));
    }
    Ok(out)
}

/// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

fn batched<K: Pod, V: Pod, S: Default>(
    map: &PerCpuHashMap<MapData, K, V>,
    add: &impl Fn(&mut S, &V),
) -> io::Result<Vec<(K, S)>> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // The kernel lays out each key's values as one 8-byte-aligned slot per possible CPU.
    let stride = size_of::<V>().next_multiple_of(8);
    let fd = map.map().fd().as_fd().as_raw_fd() as u32;
    let mut chunk = CHUNK;
    let mut keys: Vec<K> = Vec::new();
    let mut values: Vec<u8> = Vec::new();
    // Hash maps use a bucket index (u32) as the batch token.
    let (mut token, mut next) = (0u32, 0u32);
    let mut first = true;
    let mut out = Vec::new();
    loop {
        // SAFETY: K is Pod, so the all-zero pattern is a valid K.
        keys.resize(chunk, unsafe { std::mem::zeroed() });
        values.resize(chunk * stride * cpus, 0);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &raw const token as u64 },
            out_batch: &raw mut next as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: fd,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the key and value buffers hold `count` entries of the map's key and per-CPU value size, the token
        // fields point at u32s, and all of it outlives the call; the kernel writes no more than that.
        let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_LOOKUP_BATCH, &raw mut attr, size_of::<BatchAttr>()) };
        let err = (rc < 0).then(io::Error::last_os_error);
        let done = match err.as_ref().and_then(io::Error::raw_os_error) {
            None => false,
            Some(libc::ENOENT) => true, // no more keys; `count` says how many this last call copied
            Some(libc::ENOSPC) if attr.count == 0 && chunk < 1 << 20 => {
                chunk *= 2;
                continue;
            }
            Some(_) => return Err(err.expect("an error")),
        };
        for (i, key) in keys.iter().take(attr.count as usize).enumerate() {
            let mut total = S::default();
            for cpu in 0..cpus {
                let at = (i * cpus + cpu) * stride;
                // SAFETY: `at + size_of::<V>()` is within `values` (i < count ≤ chunk), V is Pod.
                let v: V = unsafe { std::ptr::read_unaligned(values.as_ptr().add(at).cast()) };
                add(&mut total, &v);
            }
            out.push((*key, total));
        }
        if done {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}

#[cfg(test)]
mod tests;
