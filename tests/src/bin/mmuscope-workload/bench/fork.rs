//! `bench-fork --mib M --forks K`: M MiB of private anonymous small pages, written and pinned long-term through
//! io_uring (`IORING_REGISTER_BUFFERS`, as `fork-pinned`), then K × fork(); each child `_exit`s at once. A fork is
//! timed in the parent from the call to its return, which includes `dup_mmap` copying every pinned page (see
//! `scenarios::fork_common`). `--unpinned` skips the pin (pages shared copy-on-write: the cheap fork).

use std::io;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::{Elapsed, Stopwatch};
use crate::cli::BenchForkArgs;
use crate::pin::IoUring;
use crate::region::{AnonRegion, Thp};
use crate::sys::{ensure_single_threaded, errno_name};
use crate::thp::PMD_BYTES;

pub fn run(args: &BenchForkArgs) -> Result<serde_json::Value> {
    let bytes = usize::try_from(args.mib).ok().and_then(|m| m.checked_mul(1 << 20)).context("--mib too large")?;
    let region = AnonRegion::map_isolated(bytes, PMD_BYTES, Thp::Never).context("mapping the region")?;
    region.touch_all();
    let ring = if args.unpinned {
        None
    } else {
        let ring = IoUring::setup()?;
        ring.register_region(&region)?;
        Some(ring)
    };
    ensure_single_threaded()?;
    let mut samples = Vec::with_capacity(args.forks as usize);
    for _ in 0..args.forks {
        samples.push(time_one_fork()?.wall_ns);
    }
    drop(ring);
    samples.sort_by(f64::total_cmp);
    Ok(json!({
        "bench": "fork",
        "pinned": !args.unpinned,
        "bytes": bytes,
        "forks": args.forks,
        "ns_per_fork_median": samples[samples.len() / 2],
        "ns_per_fork": samples,
    }))
}

/// One fork, timed in the parent from the call to its return; the child exits immediately and is reaped outside the
/// timed part.
pub fn time_one_fork() -> Result<Elapsed> {
    let clock = Stopwatch::start();
    // SAFETY: single-threaded (checked by the caller); the child only calls `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe exit without running Rust's clean-up in the child.
        unsafe { libc::_exit(0) };
    }
    let t = clock.elapsed();
    if pid < 0 {
        bail!("fork: {}", errno_name(&io::Error::last_os_error()));
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    if unsafe { libc::waitpid(pid, &mut status, 0) } != pid {
        bail!("waitpid({pid}): {}", errno_name(&io::Error::last_os_error()));
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("fork child {pid} ended with status {status:#x}");
    }
    Ok(t)
}
