//! Applying capability sets to every thread of the process.
//!
//! Capabilities belong to threads: capset(2) changes only the calling one, and when the probes are attached the
//! tokio runtime's worker threads (and maybe blocking-pool threads) already exist with the full sets. Dropping on
//! the main thread alone would leave them privileged while `/proc/<pid>/status` (the main thread) looked clean. So
//! this does what glibc does for setuid(2) across threads: a signal whose handler calls capset on the thread it
//! interrupts, sent to every thread that `/proc/self/task` still shows with other sets, until none is left.

use std::{
    fs,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst},
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::caps::{self, Caps};

/// Sets the handler installs; written before any signal is sent.
static TARGET: [AtomicU64; 3] = [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)];
/// capset calls that failed inside the handler.
static FAILURES: AtomicUsize = AtomicUsize::new(0);
/// Rounds of signalling; the wait doubles each round (1 ms … ~0.5 s, ~1 s in all).
const ROUNDS: u32 = 10;

/// A real-time signal nothing else in the agent uses (glibc reserves the ones below SIGRTMIN()).
fn signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

extern "C" fn on_signal(_: libc::c_int) {
    // SAFETY: errno is thread-local; the handler must leave it as the interrupted code had it.
    let saved = unsafe { *libc::__errno_location() };
    let target = Caps {
        effective: TARGET[0].load(SeqCst),
        permitted: TARGET[1].load(SeqCst),
        inheritable: TARGET[2].load(SeqCst),
    };
    if caps::set_current_thread_raw(target) != 0 {
        FAILURES.fetch_add(1, SeqCst);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved };
}

/// Gives every thread of this process exactly `target`, or fails naming the threads that kept other sets.
pub fn apply_to_every_thread(target: Caps) -> Result<()> {
    for (slot, value) in TARGET.iter().zip([target.effective, target.permitted, target.inheritable]) {
        slot.store(value, SeqCst);
    }
    install_handler()?;
    caps::set_current_thread(target).context("capset on the main thread")?;
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    for round in 0..ROUNDS {
        let pending = threads_without(target)?;
        if pending.is_empty() {
            break;
        }
        for tid in pending {
            // SAFETY: tgkill on our own thread group; ESRCH (the thread exited meanwhile) is harmless.
            unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal()) };
        }
        thread::sleep(Duration::from_millis(1 << round));
    }
    let left = threads_without(target)?;
    let failures = FAILURES.load(SeqCst);
    if !left.is_empty() || failures > 0 {
        bail!("threads {left:?} kept other capabilities ({failures} capset call(s) failed in the signal handler)");
    }
    Ok(())
}

fn install_handler() -> Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler only calls async-signal-safe code (atomics, capset) and
    // stays installed for good, so a late signal can never meet the default action (terminate).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SA_RESTART: interrupted system calls in other threads resume instead of failing with EINTR.
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal(), &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("installing the capability signal handler");
        }
    }
    Ok(())
}

/// Ids of this process's threads whose sets differ from `target`.
fn threads_without(target: Caps) -> Result<Vec<libc::pid_t>> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc/self/task").context("listing /proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else { continue };
        // A thread that exited between the listing and the read has no sets left to fix.
        let Ok(status) = fs::read_to_string(entry.path().join("status")) else { continue };
        if parse_status(&status).is_none_or(|caps| caps != target) {
            out.push(tid);
        }
    }
    Ok(out)
}

/// CapEff/CapPrm/CapInh of a `/proc/<pid>/task/<tid>/status` text.
pub fn parse_status(status: &str) -> Option<Caps> {
    let field = |name: &str| {
        let line = status.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?;
        u64::from_str_radix(line.trim(), 16).ok()
    };
    Some(Caps { effective: field("CapEff")?, permitted: field("CapPrm")?, inheritable: field("CapInh")? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_sets() {
        let status = "Name:\tmmuscope\nCapInh:\t0000000000000000\nCapPrm:\t0000008000000000\n\
                      CapEff:\t0000008000000000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(parse_status(status), Some(Caps { effective: 1 << 39, permitted: 1 << 39, inheritable: 0 }));
        assert_eq!(parse_status("CapEff:\tzz\n"), None);
    }
}
