//! Small system-call helpers shared by scenarios: errno names for messages, the single-thread check fork needs,
//! CPU pinning and the possible-CPU count, pidfds and `process_madvise`.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

/// `ENOSYS (Function not implemented)`-style text for an OS error.
pub fn errno_name(e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::ESRCH) => "ESRCH",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::EACCES) => "EACCES",
        _ => return e.to_string(),
    };
    format!("{name} ({e})")
}

/// Fails unless this process has exactly one thread: fork() copies only the calling thread, and the scenarios that
/// fork rely on the child being able to run ordinary code.
pub fn ensure_single_threaded() -> Result<()> {
    ensure_threads(1)
}

/// Fails unless this process has exactly `expected` threads: the caller's own plus the ones it knows are parked
/// (joining it), so no other thread can hold a lock or change memory while it forks.
pub fn ensure_threads(expected: usize) -> Result<()> {
    let threads = std::fs::read_dir("/proc/self/task").context("listing /proc/self/task")?.count();
    if threads != expected {
        bail!("this process has {threads} threads; this fork needs exactly {expected}");
    }
    Ok(())
}

/// Pins the calling thread to the CPU it runs on now, and returns that CPU. Per-CPU page batches (LRU add, lazyfree,
/// deactivate) are then drained by `lru_add_drain()` in the same syscalls that need the pages on the LRU.
pub fn pin_to_current_cpu() -> Result<usize> {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let cpu = usize::try_from(cpu).map_err(|_| io::Error::last_os_error()).context("sched_getcpu")?;
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t and `cpu` came from the kernel (below CPU_SETSIZE).
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 = this thread; `set` is a valid, initialised cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) } != 0 {
        return Err(io::Error::last_os_error()).context(format!("sched_setaffinity(CPU {cpu})"));
    }
    Ok(cpu)
}

/// The kernel's possible CPUs (`nr_cpu_ids`, from `/sys/devices/system/cpu/possible`, e.g. `0` or `0-3,6`).
pub fn possible_cpus() -> Result<usize> {
    const PATH: &str = "/sys/devices/system/cpu/possible";
    let text = std::fs::read_to_string(PATH).with_context(|| format!("reading {PATH}"))?;
    cpu_list_len(&text).with_context(|| format!("{PATH}: {text:?} is not a CPU list"))
}

/// How many CPUs a kernel CPU list (`0`, `0-3,6`) names.
fn cpu_list_len(text: &str) -> Option<usize> {
    text.trim().split(',').try_fold(0, |count, part| {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (lo, hi): (usize, usize) = (lo.parse().ok()?, hi.parse().ok()?);
        Some(count + hi.checked_sub(lo)? + 1)
    })
}

/// `pidfd_open(pid, 0)`.
pub fn pidfd_open(pid: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
    if fd < 0 {
        bail!("pidfd_open({pid}): {}", errno_name(&io::Error::last_os_error()));
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// `process_madvise(pidfd, iovs, advice, 0)`: the number of bytes advised, or the OS error.
pub fn process_madvise(pidfd: &OwnedFd, iovs: &[libc::iovec], advice: libc::c_int) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: the kernel reads `iovs.len()` iovecs from the pointer; the ranges name the target's memory, not ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_process_madvise,
            pidfd.as_raw_fd(),
            iovs.as_ptr(),
            iovs.len(),
            advice,
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_names() {
        let e = io::Error::from_raw_os_error(libc::ENOSYS);
        assert!(errno_name(&e).starts_with("ENOSYS ("), "{}", errno_name(&e));
        let odd = io::Error::from_raw_os_error(libc::EXDEV);
        assert!(!errno_name(&odd).is_empty());
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(cpu_list_len("0\n"), Some(1));
        assert_eq!(cpu_list_len("0-3,6"), Some(5));
        assert_eq!(cpu_list_len("0-1,4-7\n"), Some(6));
        assert_eq!(cpu_list_len("3-1"), None);
        assert_eq!(cpu_list_len(""), None);
    }

    #[test]
    fn pidfd_of_a_missing_process_is_a_clear_error() {
        let e = pidfd_open(u32::MAX / 2).unwrap_err().to_string();
        assert!(e.contains("pidfd_open") && (e.contains("ESRCH") || e.contains("EINVAL")), "{e}");
    }
}
