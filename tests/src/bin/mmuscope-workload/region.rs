//! Anonymous private mappings used as guest memory or as the memory a scenario operates on, with the few page
//! operations scenarios need, plus address-space holes for mappings made while a VM exists.
//!
//! Every operation is one syscall or one store and allocates nothing, so it can run while a KVM notifier is
//! registered without the Rust runtime or the allocator adding invalidations of its own.
//!
//! Geometry matters for exactness: when a VMA is split or merged at an address that is not 2 MiB aligned, and the
//! VMA spans the 2 MiB range around it, `vma_adjust_trans_huge` → `split_huge_pmd_if_needed` →
//! `split_huge_pmd_address` → `__split_huge_pmd` opens a `MMU_NOTIFY_CLEAR` bracket over that 2 MiB range whenever
//! the PUD is populated — even if the PMD maps no huge page (6.1 mm/huge_memory.c:2312/2372, 6.12 :2964/2991;
//! verified on 6.18: munmap of one page inside a 4 MiB non-THP mapping adds a 2 MiB bracket). [`AnonRegion::map_isolated`]
//! therefore places regions at aligned addresses with unmapped gaps on both sides: they never merge with a
//! neighbour, and scenarios only split them at aligned offsets (or at a THP's middle, on purpose).

use std::io;
use std::ptr::NonNull;

/// What a new region asks of transparent huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thp {
    /// `MADV_NOHUGEPAGE`: never a huge page, not even with THP `always` (Debian's default), not for khugepaged.
    Never,
    /// `MADV_HUGEPAGE`: a huge page on first touch where THP is `always` or `madvise`.
    Huge,
}

/// `mmap(MAP_PRIVATE | MAP_ANONYMOUS)` memory, unmapped on drop (or explicitly with [`AnonRegion::unmap`]).
pub struct AnonRegion {
    addr: NonNull<u8>,
    len: usize,
    page: usize,
}

impl AnonRegion {
    /// Maps `len` bytes (a whole number of pages) at a kernel-chosen address with THP disabled on them.
    pub fn map(len: usize) -> io::Result<Self> {
        let page = page_size()?;
        check_len(len, page)?;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; no existing memory is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, RW, PRIVATE_ANON, -1, 0) };
        let region = Self::from_mmap(p, len, page)?;
        // Without this a THP-`always` host could back the region with a huge page; then one 4 KiB DONTNEED would
        // first split the PMD (an extra bracket). THP is `madvise` here, but the truth must not depend on that.
        region.advise(libc::MADV_NOHUGEPAGE)?;
        Ok(region)
    }

    /// Maps `len` bytes at an `align`-aligned address inside an [`reserve_hole`]d hole, so that the VMA has no
    /// neighbour to merge with, then applies `thp`.
    pub fn map_isolated(len: usize, align: usize, thp: Thp) -> io::Result<Self> {
        let addr = reserve_hole(len, align)?;
        let region = Self::map_at(addr, len)?;
        region.advise(match thp {
            Thp::Never => libc::MADV_NOHUGEPAGE,
            Thp::Huge => libc::MADV_HUGEPAGE,
        })?;
        Ok(region)
    }

    /// Maps `len` bytes of private anonymous hugetlb memory (`MAP_HUGETLB`, the default huge page size `huge`) at a
    /// kernel-chosen, `huge`-aligned address. Its "pages" are the huge pages.
    pub fn map_hugetlb(len: usize, huge: usize) -> io::Result<Self> {
        check_len(len, huge)?;
        // SAFETY: a fresh anonymous mapping at a kernel-chosen address; no existing memory is affected.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, RW, PRIVATE_ANON | libc::MAP_HUGETLB, -1, 0) };
        Self::from_mmap(p, len, huge)
    }

    /// Maps `len` bytes exactly at `addr` (`MAP_FIXED_NOREPLACE`: fails with `EEXIST` instead of replacing an
    /// existing mapping, which would unmap it). No madvise: one syscall.
    pub fn map_at(addr: u64, len: usize) -> io::Result<Self> {
        let page = page_size()?;
        check_len(len, page)?;
        let flags = PRIVATE_ANON | libc::MAP_FIXED_NOREPLACE;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces existing mappings; `addr` is only a placement request.
        let p = unsafe { libc::mmap(addr as *mut libc::c_void, len, RW, flags, -1, 0) };
        let region = Self::from_mmap(p, len, page)?;
        if region.addr() != addr {
            // Kernels before 4.17 ignore the flag and treat the address as a hint.
            return Err(io::Error::other(format!(
                "mmap(MAP_FIXED_NOREPLACE) at {addr:#x} returned {:#x}: kernel without MAP_FIXED_NOREPLACE?",
                region.addr()
            )));
        }
        Ok(region)
    }

    fn from_mmap(p: *mut libc::c_void, len: usize, page: usize) -> io::Result<Self> {
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { addr: NonNull::new(p.cast()).expect("mmap never returns NULL on success"), len, page })
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

    /// Writes every page once.
    pub fn touch_all(&self) {
        for i in 0..self.pages() {
            self.touch(i);
        }
    }

    /// `madvise(MADV_DONTNEED)` on page `i`.
    pub fn dontneed(&self, i: usize) -> io::Result<()> {
        assert!(i < self.pages(), "page {i} outside the region");
        self.madvise(i * self.page, self.page, libc::MADV_DONTNEED)
    }

    /// `madvise(advice)` on the whole region.
    pub fn advise(&self, advice: libc::c_int) -> io::Result<()> {
        self.madvise(0, self.len, advice)
    }

    /// `mprotect(prot)` on the whole region (one VMA: no split, no merge).
    pub fn protect(&self, prot: libc::c_int) -> io::Result<()> {
        // SAFETY: exactly our mapping; callers only write to it while it is writable.
        if unsafe { libc::mprotect(self.addr.as_ptr().cast(), self.len, prot) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unmaps the last `bytes` (a positive multiple of the page size, less than the length); the region shrinks.
    pub fn unmap_tail(&mut self, bytes: usize) -> io::Result<()> {
        if bytes == 0 || bytes >= self.len || !bytes.is_multiple_of(self.page) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot unmap the last {bytes} bytes of a {}-byte region", self.len),
            ));
        }
        let keep = self.len - bytes;
        // SAFETY: [addr+keep, addr+len) is the tail of our own mapping; nothing refers to it afterwards.
        if unsafe { libc::munmap(self.addr.as_ptr().add(keep).cast(), bytes) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.len = keep;
        Ok(())
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

const RW: libc::c_int = libc::PROT_READ | libc::PROT_WRITE;
const PRIVATE_ANON: libc::c_int = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;

/// Finds an unmapped, `align`-aligned address `A` such that `[A - align, A + len + align)` is unmapped too (at least
/// one `align` of free space on either side), by mapping and immediately unmapping a larger `PROT_NONE` area. The
/// hole stays free as long as this single-threaded process maps nothing else, which scenarios guarantee while it
/// matters.
pub fn reserve_hole(len: usize, align: usize) -> io::Result<u64> {
    let page = page_size()?;
    check_len(len, page)?;
    if !align.is_power_of_two() || align < page {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("bad alignment {align}")));
    }
    let span = len
        .checked_add(4 * align)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("hole of {len} bytes is too large")))?;
    let flags = PRIVATE_ANON | libc::MAP_NORESERVE;
    // SAFETY: a fresh inaccessible mapping at a kernel-chosen address, unmapped again below.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), span, libc::PROT_NONE, flags, -1, 0) };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let start = p as u64;
    let addr = hole_address(start, align as u64);
    // SAFETY: exactly the mapping made above; nothing refers to it.
    if unsafe { libc::munmap(p, span) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(addr)
}

/// The aligned address inside a reserved `[start, start + len + 4 * align)`: at least `align` above `start`, and
/// (because it is below `start + 2 * align`) at least `2 * align` below the end.
fn hole_address(start: u64, align: u64) -> u64 {
    (start + align).next_multiple_of(align)
}

fn check_len(len: usize, page: usize) -> io::Result<()> {
    if len == 0 || !len.is_multiple_of(page) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("region size {len} is not a positive multiple of the page size {page}"),
        ));
    }
    Ok(())
}

pub fn page_size() -> io::Result<usize> {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(v).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    const M2: u64 = 2 << 20;

    #[test]
    fn hole_address_leaves_a_gap_on_both_sides() {
        for start in [0x7f00_0000_0000u64, 0x7f00_0000_1000, 0x7f00_001f_f000, 0x7f00_0020_0000] {
            let len = 16 << 10;
            let a = hole_address(start, M2);
            assert_eq!(a % M2, 0, "{start:#x}");
            assert!(a >= start + M2, "gap below for {start:#x}");
            assert!(a + len as u64 + M2 <= start + len as u64 + 4 * M2, "gap above for {start:#x}");
        }
    }

    #[test]
    fn isolated_regions_are_aligned_and_do_not_merge() {
        let a = AnonRegion::map_isolated(2 << 20, 2 << 20, Thp::Never).unwrap();
        let b = AnonRegion::map_isolated(2 << 20, 2 << 20, Thp::Never).unwrap();
        assert_eq!(a.addr() % M2, 0);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        for r in [&a, &b] {
            let line = format!("{:x}-{:x} ", r.addr(), r.addr() + r.len() as u64);
            assert!(maps.lines().any(|l| l.starts_with(&line)), "{line} is its own VMA in\n{maps}");
        }
    }

    #[test]
    fn unmap_tail_shrinks_and_rejects_bad_sizes() {
        let mut r = AnonRegion::map(4 * page_size().unwrap()).unwrap();
        let page = r.page_size();
        assert!(r.unmap_tail(0).is_err());
        assert!(r.unmap_tail(4 * page).is_err());
        assert!(r.unmap_tail(page + 1).is_err());
        r.unmap_tail(page).unwrap();
        assert_eq!(r.pages(), 3);
        r.touch(2);
    }

    #[test]
    fn map_at_refuses_to_replace() {
        let r = AnonRegion::map(page_size().unwrap()).unwrap();
        let e = AnonRegion::map_at(r.addr(), r.len()).err().expect("EEXIST");
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    }
}
