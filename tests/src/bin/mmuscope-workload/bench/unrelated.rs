//! `bench-unrelated --loop L --iterations N`: what every other process on a host does, in a process with no
//! secondary MMU (no KVM, no mmu_notifier) and no pinned page, timed; the agent must not slow these down (issue 21:
//! pay only where there is something to see). Each loop runs a tenth of N untimed first (one fork for `fork`); the
//! JSON says how many (`warmup`).
//!
//! * `syscall`: `getppid()` through `syscall(2)` (never answered from a cache): the system-call entry and exit;
//! * `fault`: `madvise(MADV_DONTNEED)` of one page, then a write to it: an anonymous write fault that allocates an
//!   order-0 movable page (`mm_page_alloc`), and a zap with no notifier to call;
//! * `fork`: `fork()` of 256 MiB of written, unpinned private anonymous 4 KiB pages (THP off), timed in the parent
//!   from the call to its return; the child `_exit`s at once and is reaped outside the timed part;
//! * `mmap`: `mmap` one private anonymous page, write it, `munmap` it: a fault with a page allocation, then a zap and
//!   a free, per round.
//! * `cow`: one byte written to a page this process shares copy-on-write with a child: a write-protect fault that
//!   copies the page (`wp_page_copy`). The process holds [`COW_PAGES`] written pages and forks a child that only
//!   waits (untimed); the writes to each page are timed; then the child is killed and reaped and the next child forked
//!   (untimed), until N pages were written. No notifier, no pin.

use std::io;

use anyhow::{Context, Result, bail};

use super::{Elapsed, Stopwatch, fork::time_one_fork};
use crate::cli::{BenchUnrelatedArgs, UnrelatedLoop};
use crate::region::{AnonRegion, Thp, page_size};
use crate::sys::{ensure_single_threaded, errno_name};
use crate::thp::PMD_BYTES;

/// The memory the `fork` loop's process holds.
const FORK_BYTES: usize = 256 << 20;
/// Untimed forks before the timed ones.
const FORK_WARMUP: u64 = 1;
/// The pages the `cow` loop's process shares with each child (1 MiB).
const COW_PAGES: usize = 256;

pub fn run(args: &BenchUnrelatedArgs) -> Result<serde_json::Value> {
    let n = args.iterations;
    let (name, t) = match args.kind {
        UnrelatedLoop::Syscall => ("syscall", timed(n, syscall_round)),
        UnrelatedLoop::Fault => ("fault", fault_loop(n)),
        UnrelatedLoop::Fork => ("fork", fork_loop(n)),
        UnrelatedLoop::Mmap => ("mmap", mmap_loop(n)),
        UnrelatedLoop::Cow => ("cow", cow_loop(n)),
    };
    let mut v = super::per_op("unrelated", n, t.with_context(|| format!("the {name} loop"))?);
    v["loop"] = name.into();
    // With the timed ones, every operation the process did (the bench's profile pass counts hook runs per operation).
    v["warmup"] = if matches!(args.kind, UnrelatedLoop::Fork) { FORK_WARMUP } else { warmup(n) }.into();
    if matches!(args.kind, UnrelatedLoop::Fork) {
        v["bytes"] = FORK_BYTES.into();
    }
    Ok(v)
}

/// Untimed rounds before `iterations` timed ones.
fn warmup(iterations: u64) -> u64 {
    iterations / 10 + 1
}

/// `warmup(iterations)` rounds untimed, then `iterations` rounds timed.
fn timed(iterations: u64, mut round: impl FnMut() -> io::Result<()>) -> Result<Elapsed> {
    for _ in 0..warmup(iterations) {
        round()?;
    }
    let clock = Stopwatch::start();
    for _ in 0..iterations {
        round()?;
    }
    Ok(clock.elapsed())
}

fn syscall_round() -> io::Result<()> {
    // SAFETY: getppid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getppid) };
    Ok(())
}

fn fault_loop(iterations: u64) -> Result<Elapsed> {
    let page = AnonRegion::map(page_size()?).context("mapping one page")?;
    timed(iterations, || {
        page.dontneed(0)?;
        page.touch(0);
        Ok(())
    })
}

fn fork_loop(forks: u64) -> Result<Elapsed> {
    let region = AnonRegion::map_isolated(FORK_BYTES, PMD_BYTES, Thp::Never).context("mapping the region")?;
    region.touch_all();
    ensure_single_threaded()?;
    for _ in 0..FORK_WARMUP {
        time_one_fork()?;
    }
    let mut total = Elapsed::default();
    for _ in 0..forks {
        total += time_one_fork()?;
    }
    Ok(total)
}

fn mmap_loop(iterations: u64) -> Result<Elapsed> {
    let len = page_size()?;
    timed(iterations, || mmap_round(len))
}

fn mmap_round(len: usize) -> io::Result<()> {
    // SAFETY: a fresh private anonymous mapping at a kernel-chosen address; nothing else is affected.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, PRIVATE_ANON, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the first byte of the writable page just mapped.
    unsafe { p.cast::<u8>().write_volatile(1) };
    // SAFETY: exactly the mapping made above, not used afterwards.
    if unsafe { libc::munmap(p, len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const PRIVATE_ANON: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// `warmup(faults)` copy-on-write faults untimed, then `faults` timed, in batches of up to [`COW_PAGES`] per child.
fn cow_loop(faults: u64) -> Result<Elapsed> {
    let region =
        AnonRegion::map_isolated(COW_PAGES * page_size()?, PMD_BYTES, Thp::Never).context("mapping the region")?;
    region.touch_all();
    ensure_single_threaded()?;
    cow_faults(&region, warmup(faults))?;
    cow_faults(&region, faults)
}

/// `faults` writes, each to a page shared with a live child; only the writes are timed.
fn cow_faults(region: &AnonRegion, faults: u64) -> Result<Elapsed> {
    let mut total = Elapsed::default();
    let mut left = faults;
    while left > 0 {
        let batch = left.min(COW_PAGES as u64);
        let child = WaitingChild::fork()?;
        let clock = Stopwatch::start();
        for i in 0..batch as usize {
            region.touch(i);
        }
        total += clock.elapsed();
        child.reap()?;
        left -= batch;
    }
    Ok(total)
}

/// A forked child that only waits for its `SIGKILL`, keeping the parent's pages shared copy-on-write.
struct WaitingChild(libc::pid_t);

impl WaitingChild {
    fn fork() -> Result<Self> {
        // SAFETY: single-threaded (checked by the caller); the child only calls `pause`, async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            loop {
                // SAFETY: waits for a signal; SIGKILL ends the child.
                unsafe { libc::pause() };
            }
        }
        if pid < 0 {
            bail!("fork: {}", errno_name(&io::Error::last_os_error()));
        }
        Ok(Self(pid))
    }

    fn reap(self) -> Result<()> {
        let mut status = 0;
        // SAFETY: signals and waits for our own child.
        if unsafe { libc::kill(self.0, libc::SIGKILL) } != 0
            || unsafe { libc::waitpid(self.0, &mut status, 0) } != self.0
        {
            bail!("ending child {}: {}", self.0, errno_name(&io::Error::last_os_error()));
        }
        Ok(())
    }
}
