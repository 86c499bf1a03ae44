//! Long-term pins through io_uring fixed buffers, on raw syscalls (no ring is ever mapped or submitted to).
//!
//! `IORING_REGISTER_BUFFERS` pins every page of each iovec: 6.1 `io_sqe_buffer_register` → `io_pin_pages` →
//! `pin_user_pages(…, FOLL_WRITE | FOLL_LONGTERM, …)` (io_uring/rsrc.c:1006); 6.12 the same through
//! `pin_user_pages_fast` (6.12 coalesces a THP to one pin per folio, which still makes the whole folio "maybe
//! pinned"). FOLL_PIN sets `MMF_HAS_PINNED` on the mm, which is what makes a later fork copy the pinned pages.
//! The pins last until the ring is destroyed: closing its fd (and every fork child's copy of it).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{Result, bail};

use crate::region::AnonRegion;
use crate::sys::errno_name;

const IORING_REGISTER_BUFFERS: libc::c_uint = 0;
/// `struct io_uring_params`: 120 bytes (10 u32 of parameters, then the sq and cq ring offset blocks of 40 bytes).
const PARAMS_WORDS: usize = 30;

/// An io_uring instance used only for buffer registration.
pub struct IoUring(OwnedFd);

impl IoUring {
    /// `io_uring_setup(1, {0})`.
    pub fn setup() -> Result<Self> {
        let mut params = [0u32; PARAMS_WORDS];
        // SAFETY: io_uring_setup reads and writes exactly one `struct io_uring_params` (120 bytes) at the pointer.
        let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1 as libc::c_uint, params.as_mut_ptr()) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::ENOSYS) => " (kernel built without io_uring?)",
                Some(libc::EPERM) => " (io_uring disabled? see sysctl kernel.io_uring_disabled)",
                _ => "",
            };
            bail!("io_uring_setup: {}{hint}", errno_name(&e));
        }
        // SAFETY: a new fd owned by nobody else.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }))
    }

    /// `IORING_REGISTER_BUFFERS` with one iovec covering all of `region`: pins every page of it.
    pub fn register_region(&self, region: &AnonRegion) -> Result<()> {
        let iov = libc::iovec { iov_base: region.addr() as *mut libc::c_void, iov_len: region.len() };
        // SAFETY: io_uring_register reads `nr_args` (1) iovecs at the pointer; the iovec describes our own mapping.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_uring_register,
                self.0.as_raw_fd(),
                IORING_REGISTER_BUFFERS,
                &raw const iov,
                1 as libc::c_uint,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            let hint = match e.raw_os_error() {
                Some(libc::ENOMEM) => " (RLIMIT_MEMLOCK too low without CAP_IPC_LOCK?)",
                Some(libc::EOPNOTSUPP) => " (file-backed memory?)",
                _ => "",
            };
            bail!("io_uring_register(IORING_REGISTER_BUFFERS, {} bytes): {}{hint}", region.len(), errno_name(&e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_struct_size_matches_the_uapi() {
        assert_eq!(size_of::<[u32; PARAMS_WORDS]>(), 120);
    }
}
