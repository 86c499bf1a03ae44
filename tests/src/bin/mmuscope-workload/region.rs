//! An anonymous private mapping used as guest memory, with the few page operations scenarios need.
//!
//! Every operation is one syscall or one store and allocates nothing, so it can run while a KVM notifier is
//! registered without the Rust runtime or the allocator adding invalidations of its own.

use std::io;
use std::ptr::NonNull;

/// `mmap(MAP_PRIVATE | MAP_ANONYMOUS)` memory, unmapped on drop (or explicitly with [`AnonRegion::unmap`]).
pub struct AnonRegion {
    addr: NonNull<u8>,
    len: usize,
    page: usize,
}

impl AnonRegion {
    /// Maps `len` bytes (a whole number of pages) with THP disabled on them.
    pub fn map(len: usize) -> io::Result<Self> {
        let page = page_size()?;
        if len == 0 || !len.is_multiple_of(page) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("region size {len} is not a positive multiple of the page size {page}"),
            ));
        }
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let region = Self { addr: NonNull::new(p.cast()).expect("mmap never returns NULL on success"), len, page };
        // Without this a THP-`always` host could back the region with a huge page; then one 4 KiB DONTNEED would
        // first split the PMD (an extra bracket). THP is `madvise` here, but the truth must not depend on that.
        region.madvise(0, len, libc::MADV_NOHUGEPAGE)?;
        Ok(region)
    }

    pub fn addr(&self) -> u64 {
        self.addr.as_ptr() as u64
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn page_size(&self) -> usize {
        self.page
    }

    pub fn pages(&self) -> usize {
        self.len / self.page
    }

    /// Writes one byte into page `i`. A *write* fault installs a fresh zeroed page without any invalidation; a read
    /// fault would map the shared zero page, and the next write would then replace it (COW, one more bracket).
    pub fn touch(&self, i: usize) {
        assert!(i < self.pages(), "page {i} outside the region");
        // SAFETY: in bounds (checked above) of a live PROT_WRITE mapping we own; u8 has no alignment needs.
        unsafe { self.addr.as_ptr().add(i * self.page).write_volatile(1) };
    }

    /// `madvise(MADV_DONTNEED)` on page `i`.
    pub fn dontneed(&self, i: usize) -> io::Result<()> {
        assert!(i < self.pages(), "page {i} outside the region");
        self.madvise(i * self.page, self.page, libc::MADV_DONTNEED)
    }

    /// Unmaps now, reporting errors (drop would ignore them).
    pub fn unmap(self) -> io::Result<()> {
        let this = std::mem::ManuallyDrop::new(self);
        this.munmap()
    }

    fn madvise(&self, offset: usize, len: usize, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: [offset, offset+len) lies inside our mapping (callers pass page-aligned in-bounds ranges).
        let rc = unsafe { libc::madvise(self.addr.as_ptr().add(offset).cast(), len, advice) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn munmap(&self) -> io::Result<()> {
        // SAFETY: exactly the mapping created in `map`; callers guarantee it is not used afterwards.
        if unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for AnonRegion {
    fn drop(&mut self) {
        let _ = self.munmap();
    }
}

fn page_size() -> io::Result<usize> {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(v).map_err(|_| io::Error::last_os_error())
}
