//! fork() with a report from the child: the child reads the PFNs of a region from *its own* `/proc/self/pagemap`
//! (a pagemap fd is bound to the opener's mm) and writes them to a pipe, then `_exit`s; the parent collects them.
//!
//! The child runs only raw syscalls on memory prepared before the fork (no allocation, no locks, no unwinding), so
//! it is safe whatever state the parent's runtime is in; it never touches the region, so it never breaks COW on it.
//! Failures in the child come back as its exit code ([`ChildStage`]).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

use crate::pagemap::{self, decode};
use crate::sys::{ensure_threads, errno_name};

/// Where the child failed, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum ChildStage {
    Open = 20,
    Read = 21,
    Write = 22,
}

impl ChildStage {
    fn describe(code: i32) -> String {
        match code {
            20 => "could not open /proc/self/pagemap".to_owned(),
            21 => "could not read its pagemap entries".to_owned(),
            22 => "could not write to the report pipe".to_owned(),
            other => format!("exited with status {other}"),
        }
    }
}

/// What the child saw.
#[derive(Debug)]
pub struct ChildReport {
    pub pid: u32,
    /// PFN of every page of the region in the child (all present, PFNs visible).
    pub pfns: Vec<u64>,
}

/// Forks; the child reports the PFNs of `pages` pages at `addr`. Returns after the child has exited successfully.
/// `threads` is how many threads the process has: 1, or 2 when the caller is a thread its main thread joins.
pub fn fork_and_report_pfns(addr: u64, pages: usize, page: usize, threads: usize) -> Result<ChildReport> {
    ensure_threads(threads)?;
    let (reader, writer) = pipe()?;
    let mut buf = vec![0u8; pages * 8];
    let offset = (addr / page as u64 * 8) as libc::off_t;
    // SAFETY: no other running thread (checked above); the child only runs `child_main`, which uses raw syscalls on memory
    // that exists already and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        bail!("fork: {}", errno_name(&io::Error::last_os_error()));
    }
    if pid == 0 {
        child_main(writer.as_raw_fd(), offset, &mut buf);
    }
    drop(writer);
    let pid = pid as u32;
    let read = File::from(reader).read_exact(&mut buf);
    let status = wait(pid)?;
    if status != 0 {
        bail!("fork child {pid} {}", ChildStage::describe(status));
    }
    read.with_context(|| format!("reading the PFN report of fork child {pid}"))?;
    let pfns = pagemap::pfns(&decode(&buf), addr, page as u64).with_context(|| format!("fork child {pid}"))?;
    Ok(ChildReport { pid, pfns })
}

/// The child: read our own pagemap entries into `buf`, write them out, `_exit`.
fn child_main(out: libc::c_int, offset: libc::off_t, buf: &mut [u8]) -> ! {
    // SAFETY (whole function): raw syscalls on a static path, on `buf` (ours, prepared before fork) and on fds we own.
    unsafe {
        let fd = libc::open(c"/proc/self/pagemap".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            libc::_exit(ChildStage::Open as i32);
        }
        let mut done = 0usize;
        while done < buf.len() {
            let n = libc::pread(fd, buf.as_mut_ptr().add(done).cast(), buf.len() - done, offset + done as libc::off_t);
            if n <= 0 {
                libc::_exit(ChildStage::Read as i32);
            }
            done += n as usize;
        }
        let mut sent = 0usize;
        while sent < buf.len() {
            let n = libc::write(out, buf.as_ptr().add(sent).cast(), buf.len() - sent);
            if n <= 0 {
                libc::_exit(ChildStage::Write as i32);
            }
            sent += n as usize;
        }
        libc::_exit(0)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        bail!("pipe2: {}", errno_name(&io::Error::last_os_error()));
    }
    // SAFETY: two new fds owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Waits for `pid`; its exit code (128 + signal for a killed child).
fn wait(pid: u32) -> Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child; `status` is a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if rc >= 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            bail!("waitpid({pid}): {}", errno_name(&e));
        }
    }
    Ok(if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pagemap::Pagemap;
    use crate::region::{AnonRegion, page_size};

    #[test]
    fn child_stages_are_described() {
        assert!(ChildStage::describe(ChildStage::Open as i32).contains("pagemap"));
        assert!(ChildStage::describe(3).contains("status 3"));
    }

    /// Exit statuses of the child of [`unpinned_pages_are_shared`].
    const EQUAL: i32 = 0;
    const DIFFERENT: i32 = 1;
    const NO_PFNS: i32 = 2;
    const FAILED: i32 = 3;

    /// Unpinned private pages are shared after fork (COW): same PFNs in parent and child. `fork_and_report_pfns`
    /// refuses a multi-threaded process and the test harness runs tests on threads (even with `--test-threads=1`),
    /// so the comparison runs in a child forked from this test, which has one thread. The child allocates (glibc's
    /// fork leaves malloc usable in it) but neither prints nor unwinds: its verdict is its exit status, its
    /// message goes to fd 2 with write(2). Needs root for PFNs: without it the child reports the refusal, which
    /// passes outside CI only.
    #[test]
    fn unpinned_pages_are_shared() {
        // SAFETY: the child runs `compare_in_child` (syscalls, allocation, no locks of other threads) and leaves
        // with _exit, whatever happens.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let code = std::panic::catch_unwind(compare_in_child).unwrap_or(FAILED);
            // SAFETY: ends the child without running the harness's code again.
            unsafe { libc::_exit(code) };
        }
        match wait(pid as u32).unwrap() {
            EQUAL => {}
            NO_PFNS => {
                assert!(!mmuscope_tests::harness::prereq::in_ci(), "PFNs unreadable in CI (CI runs as root)");
                eprintln!("SKIPPED: PFN comparison (reading PFNs needs CAP_SYS_ADMIN)");
            }
            DIFFERENT => panic!("child and parent PFNs of unpinned pages differ after fork (see stderr)"),
            other => panic!("the child comparing PFNs failed with status {other} (see stderr)"),
        }
    }

    /// The body of [`unpinned_pages_are_shared`] in its single-threaded child; an exit status.
    fn compare_in_child() -> i32 {
        let compared = (|| -> Result<(Vec<u64>, Vec<u64>)> {
            let page = page_size()?;
            let r = AnonRegion::map(4 * page)?;
            r.touch_all();
            let child = fork_and_report_pfns(r.addr(), 4, page, 1)?;
            let parent = Pagemap::open_self(page)?.pfns(r.addr(), 4)?;
            Ok((child.pfns, parent))
        })();
        let (code, message) = match compared {
            Ok((child, parent)) if child == parent => (EQUAL, String::new()),
            Ok((child, parent)) => (DIFFERENT, format!("fork child PFNs {child:?} != parent PFNs {parent:?}\n")),
            Err(e) => {
                let e = format!("{e:#}\n");
                (if e.contains("CAP_SYS_ADMIN") { NO_PFNS } else { FAILED }, e)
            }
        };
        // SAFETY: writes our own buffer to stderr; a short write only shortens the diagnostic.
        unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
        code
    }
}
