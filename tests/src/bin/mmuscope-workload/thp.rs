//! Transparent huge pages: is a region PMD-mapped (`AnonHugePages` of its VMA in `/proc/self/smaps`), which pages of
//! this mm belong to a THP at all (`/proc/kpageflags`), and what the THP settings are (for error messages).
//!
//! `AnonHugePages` counts PMD-mapped anonymous THP memory only, which is exactly the "is it one huge mapping"
//! question: a THP whose PMD was split still exists as a PTE-mapped large folio, but no longer counts.

use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};

use crate::pagemap::Pagemap;
use crate::region::{AnonRegion, Thp, page_size};

pub const SMAPS: &str = "/proc/self/smaps";
const MAPS: &str = "/proc/self/maps";
/// One u64 of `KPF_*` flags per PFN (Documentation/admin-guide/mm/pagemap.rst).
const KPAGEFLAGS: &str = "/proc/kpageflags";
/// include/uapi/linux/kernel-page-flags.h
const KPF_THP: u64 = 1 << 22;
const KPF_ZERO_PAGE: u64 = 1 << 24;
/// The end of x86-64's 47-bit user address space.
const USER_END: u64 = 1 << 47;
/// Pagemap entries read at once by [`splittable_thp_pages`].
const CENSUS_CHUNK: u64 = 4096;
const ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
const DEFRAG: &str = "/sys/kernel/mm/transparent_hugepage/defrag";

/// `AnonHugePages` in KiB of the VMA that starts at `vma_start`, or `None` if no VMA starts there.
pub fn anon_huge_kib(smaps: &str, vma_start: u64) -> Option<u64> {
    let mut in_vma = false;
    for line in smaps.lines() {
        if let Some(start) = vma_header_start(line) {
            if in_vma {
                return None; // the VMA ended without the field
            }
            in_vma = start == vma_start;
        } else if in_vma && let Some(rest) = line.strip_prefix("AnonHugePages:") {
            let kib = rest.trim().strip_suffix("kB")?.trim();
            return kib.parse().ok();
        }
    }
    None
}

/// The start address of a VMA header line (`7f12...-7f13... rw-p 00000000 00:00 0   [name]`).
fn vma_header_start(line: &str) -> Option<u64> {
    let range = line.split_ascii_whitespace().next()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    u64::from_str_radix(end, 16).ok()?;
    Some(start)
}

/// `AnonHugePages` (KiB) of this process's VMA starting at `vma_start`.
pub fn pmd_mapped_kib(vma_start: u64) -> Result<u64> {
    let smaps = std::fs::read_to_string(SMAPS).with_context(|| format!("reading {SMAPS}"))?;
    match anon_huge_kib(&smaps, vma_start) {
        Some(kib) => Ok(kib),
        None => bail!("{SMAPS} has no VMA starting at {vma_start:#x} with an AnonHugePages field"),
    }
}

/// The `/proc/vmstat` counters `names`, in that order (the kernel's own count of THP splits, swap-outs …).
pub fn vmstat(names: &[&str]) -> Result<Vec<u64>> {
    let text = std::fs::read_to_string("/proc/vmstat").context("reading /proc/vmstat")?;
    names
        .iter()
        .map(|name| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
                .with_context(|| format!("/proc/vmstat has no {name}"))
        })
        .collect()
}

/// Size of a PMD-mapped THP on x86-64.
pub const PMD_BYTES: usize = 2 << 20;

/// A 2 MiB-aligned, isolated `MADV_HUGEPAGE` region whose first write fault installed one PMD-mapped THP, verified
/// through `AnonHugePages`. Fails with the THP settings when the kernel gave small pages instead.
pub fn pmd_mapped_region() -> Result<AnonRegion> {
    let region = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Huge).context("mapping a THP region")?;
    region.touch(0);
    let kib = pmd_mapped_kib(region.addr())?;
    if kib != PMD_BYTES as u64 / 1024 {
        bail!(
            "no PMD-mapped THP after touching a 2 MiB MADV_HUGEPAGE region (AnonHugePages {kib} kB; THP {}): \
             THP disabled or no free 2 MiB page",
            settings()
        );
    }
    Ok(region)
}

/// Present pages of this process's mm that belong to a THP `split_huge_page` can split, PMD- or PTE-mapped, anonymous
/// or file: `(inside, outside)` the `[start, end)` ranges of `within`. From `/proc/self/pagemap` and `/proc/kpageflags`
/// (root only) for every page of every VMA: `KPF_THP` without `KPF_ZERO_PAGE` (the huge zero page is not on the LRU;
/// 5.10 fs/proc/page.c:152-160 sets `KPF_THP` for a compound page whose head is on the LRU or anonymous).
pub fn splittable_thp_pages(within: &[(u64, u64)]) -> Result<(u64, u64)> {
    let page = page_size()? as u64;
    let maps = std::fs::read_to_string(MAPS).with_context(|| format!("reading {MAPS}"))?;
    let pagemap = Pagemap::open_self(page as usize)?;
    let flags = std::fs::File::open(KPAGEFLAGS).with_context(|| format!("opening {KPAGEFLAGS} (root only)"))?;
    let (mut inside, mut outside) = (0, 0);
    for (start, end) in maps.lines().filter_map(vma_range) {
        // [vsyscall] lies above the user address space, which pagemap ends with.
        if start >= USER_END {
            continue;
        }
        let mut addr = start;
        while addr < end {
            let pages = ((end - addr) / page).min(CENSUS_CHUNK);
            for (i, e) in pagemap.entries(addr, pages as usize)?.into_iter().enumerate() {
                let Some(pfn) = e.pfn() else { continue };
                if pfn == 0 {
                    bail!("{} hides PFNs (reading them needs CAP_SYS_ADMIN; run as root)", Pagemap::SELF);
                }
                let mut raw = [0u8; 8];
                flags.read_exact_at(&mut raw, pfn * 8).with_context(|| format!("reading {KPAGEFLAGS} at PFN {pfn}"))?;
                let f = u64::from_ne_bytes(raw);
                if f & KPF_THP == 0 || f & KPF_ZERO_PAGE != 0 {
                    continue;
                }
                let at = addr + i as u64 * page;
                if within.iter().any(|&(s, e)| (s..e).contains(&at)) {
                    inside += 1;
                } else {
                    outside += 1;
                }
            }
            addr += pages * page;
        }
    }
    Ok((inside, outside))
}

/// `[start, end)` of a `/proc/self/maps` line.
fn vma_range(line: &str) -> Option<(u64, u64)> {
    let (start, end) = line.split_ascii_whitespace().next()?.split_once('-')?;
    Some((u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?))
}

/// `enabled=…, defrag=…` from sysfs (the bracketed choices), for messages.
pub fn settings() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| selected(&s).map(str::to_owned))
            .unwrap_or_else(|| "unknown".to_owned())
    };
    format!("enabled={}, defrag={}", read(ENABLED), read(DEFRAG))
}

/// The `[choice]` of a sysfs multiple-choice file such as `always [madvise] never`.
fn selected(s: &str) -> Option<&str> {
    let open = s.find('[')?;
    let close = s[open..].find(']')? + open;
    Some(&s[open + 1..close])
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS_SAMPLE: &str = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
AnonHugePages:         0 kB
7f3a40000000-7f3a40200000 rw-p 00000000 00:00 0 
Size:               2048 kB
Rss:                2048 kB
AnonHugePages:      2048 kB
ShmemPmdMapped:        0 kB
7f3a40400000-7f3a40500000 rw-p 00000000 00:00 0 
Size:               1024 kB
VmFlags: rd wr mr mw me ac 
";

    #[test]
    fn finds_the_vma_and_its_field() {
        assert_eq!(anon_huge_kib(SMAPS_SAMPLE, 0x7f3a40000000), Some(2048));
        assert_eq!(anon_huge_kib(SMAPS_SAMPLE, 0x55d0c0a00000), Some(0));
        assert_eq!(anon_huge_kib(SMAPS_SAMPLE, 0x7f3a40400000), None, "VMA without the field");
        assert_eq!(anon_huge_kib(SMAPS_SAMPLE, 0x1000), None, "no such VMA");
        assert_eq!(anon_huge_kib(SMAPS_SAMPLE, 0x7f3a40200000), None, "an end address is not a start");
    }

    #[test]
    fn maps_ranges() {
        assert_eq!(
            vma_range("7f3a40000000-7f3a40200000 rw-p 00000000 00:00 0 "),
            Some((0x7f3a40000000, 0x7f3a40200000))
        );
        assert_eq!(vma_range("garbage"), None);
    }

    #[test]
    fn field_lines_are_not_headers() {
        assert_eq!(vma_header_start("Size:                132 kB"), None);
        assert_eq!(vma_header_start("VmFlags: rd wr mr mw me ac"), None);
        assert_eq!(
            vma_header_start("ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0"),
            Some(0xffffffffff600000)
        );
    }

    #[test]
    fn reads_the_selected_choice() {
        assert_eq!(selected("always [madvise] never\n"), Some("madvise"));
        assert_eq!(selected("[always] defer defer+madvise madvise never"), Some("always"));
        assert_eq!(selected("madvise"), None);
    }

    #[test]
    fn own_region_is_found() {
        let r = AnonRegion::map_isolated(PMD_BYTES, PMD_BYTES, Thp::Never).unwrap();
        r.touch_all();
        assert_eq!(pmd_mapped_kib(r.addr()).unwrap(), 0);
    }
}
