//! `/proc/<pid>/pagemap` (Documentation/admin-guide/mm/pagemap.rst): one little-endian u64 per virtual page.
//!
//! Bits 0–54 PFN (when present; zeroed unless the opener has `CAP_SYS_ADMIN`), 55 soft-dirty, 56 exclusively mapped,
//! 57 uffd-wp, 61 file page or shared anonymous, 62 swapped, 63 present. A pagemap file is bound to the mm of the
//! process that opened it, so a forked child must open its own.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};

const PFN_MASK: u64 = (1 << 55) - 1;
const SWAPPED: u64 = 1 << 62;
const PRESENT: u64 = 1 << 63;

/// One pagemap entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageEntry(pub u64);

impl PageEntry {
    pub fn present(self) -> bool {
        self.0 & PRESENT != 0
    }

    pub fn swapped(self) -> bool {
        self.0 & SWAPPED != 0
    }

    /// The page frame number of a present page (0 when hidden from an unprivileged reader).
    pub fn pfn(self) -> Option<u64> {
        self.present().then_some(self.0 & PFN_MASK)
    }
}

/// PFNs of entries that must all be present, with readable PFNs. `base` is the first entry's address (for errors).
pub fn pfns(entries: &[PageEntry], base: u64, page: u64) -> Result<Vec<u64>> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| match e.pfn() {
            None => bail!("page {i} at {:#x} is not present (pagemap entry {:#x})", base + i as u64 * page, e.0),
            Some(0) => bail!("pagemap hides PFNs (reading them needs CAP_SYS_ADMIN; run as root)"),
            Some(pfn) => Ok(pfn),
        })
        .collect()
}

/// Decodes `8 * n` little-endian bytes.
pub fn decode(bytes: &[u8]) -> Vec<PageEntry> {
    bytes
        .chunks_exact(8)
        .map(|c| PageEntry(u64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes"))))
        .collect()
}

/// An open `/proc/self/pagemap`.
pub struct Pagemap {
    file: File,
    page: u64,
}

impl Pagemap {
    pub const SELF: &'static str = "/proc/self/pagemap";

    pub fn open_self(page: usize) -> Result<Self> {
        let file = File::open(Self::SELF).with_context(|| format!("opening {}", Self::SELF))?;
        Ok(Self { file, page: page as u64 })
    }

    /// Entries of `pages` pages from `addr`.
    pub fn entries(&self, addr: u64, pages: usize) -> Result<Vec<PageEntry>> {
        let mut buf = vec![0u8; pages * 8];
        self.file
            .read_exact_at(&mut buf, addr / self.page * 8)
            .with_context(|| format!("reading {} for {pages} pages at {addr:#x}", Self::SELF))?;
        Ok(decode(&buf))
    }

    /// The raw entries of `buf.len() / 8` pages from `addr`, into `buf`: no allocation, for use while a notifier is
    /// registered.
    pub fn read_into(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, addr / self.page * 8)
    }

    /// PFNs of `pages` present pages from `addr`.
    pub fn pfns(&self, addr: u64, pages: usize) -> Result<Vec<u64>> {
        pfns(&self.entries(addr, pages)?, addr, self.page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flags_and_pfn() {
        let exclusive = 1 << 56;
        let present = PageEntry(PRESENT | exclusive | 0x1234);
        assert!(present.present() && !present.swapped());
        assert_eq!(present.pfn(), Some(0x1234));
        // A swap entry: bits 0-4 type, 5-54 offset; no PFN.
        let swapped = PageEntry(SWAPPED | (7 << 5) | 1);
        assert!(swapped.swapped() && !swapped.present());
        assert_eq!(swapped.pfn(), None);
        assert_eq!(PageEntry(0).pfn(), None);
        let file_or_shared = 1 << 61;
        assert_eq!(PageEntry(PRESENT | file_or_shared | PFN_MASK).pfn(), Some(PFN_MASK));
    }

    #[test]
    fn decode_is_little_endian_and_ignores_a_partial_tail() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(PRESENT | 5).to_le_bytes());
        bytes.extend_from_slice(&SWAPPED.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        assert_eq!(decode(&bytes), [PageEntry(PRESENT | 5), PageEntry(SWAPPED)]);
    }

    #[test]
    fn pfns_require_present_and_visible_pages() {
        let ok = [PageEntry(PRESENT | 10), PageEntry(PRESENT | 11)];
        assert_eq!(pfns(&ok, 0x1000, 4096).unwrap(), [10, 11]);
        let hole = [PageEntry(PRESENT | 10), PageEntry(0)];
        let e = pfns(&hole, 0x1000, 4096).unwrap_err().to_string();
        assert!(e.contains("page 1 at 0x2000 is not present"), "{e}");
        let hidden = [PageEntry(PRESENT)];
        assert!(pfns(&hidden, 0, 4096).unwrap_err().to_string().contains("CAP_SYS_ADMIN"));
    }

    #[test]
    fn reads_own_pages() {
        let page = crate::region::page_size().unwrap();
        let r = crate::region::AnonRegion::map(2 * page).unwrap();
        r.touch(0);
        let pm = Pagemap::open_self(page).unwrap();
        let e = pm.entries(r.addr(), 2).unwrap();
        assert!(e[0].present());
        assert!(!e[1].present() && !e[1].swapped());
    }
}
