//! Reads an eBPF ring buffer on the tokio runtime: one task per ring buffer hands each record to a callback.
//! Used by the cgroup births (`births.rs`) and the slow brackets (`slow.rs`).

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::probes::Probes;

/// Takes the ring buffer `map` from the loaded object and starts the task that passes each record to `record`.
/// If waiting on the buffer fails, the task logs `stopped` (what the user loses) and ends.
pub fn spawn_reader(
    probes: &mut Probes,
    map: &str,
    stopped: &'static str,
    mut record: impl FnMut(&[u8]) + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let ring: RingBuf<MapData> = probes.take_map(map)?.try_into()?;
    // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns the ring buffer, and `as_raw_fd`
    // always returns that same fd.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }?;
    let map = map.to_string();
    Ok(tokio::spawn(async move {
        loop {
            let mut guard = match fd.readable_mut().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!("ring buffer {map}: {e}; {stopped}");
                    return;
                }
            };
            while let Some(item) = guard.get_inner_mut().next() {
                record(&item);
            }
            guard.clear_ready();
        }
    }))
}
