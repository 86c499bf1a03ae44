//! Which secondary-TLB notification API the running kernel has, from its BTF (never from `uname`):
//! `__mmu_notifier_arch_invalidate_secondary_tlbs` → 6.6+, `__mmu_notifier_invalidate_range` → before 6.6.
//! Scenarios whose truth differs between the two generations record the answer in the truth (and give the
//! expectations for both generations anyway, keyed by API).
//!
//! The names are looked up in the BTF string table: both are function names only (the ops member is called
//! `arch_invalidate_secondary_tlbs` / `invalidate_range`, without the prefix), the match is on whole NUL-terminated
//! strings, and it takes milliseconds where parsing every BTF type takes seconds under TCG.

use std::path::Path;

use anyhow::{Context, Result, bail};
use mmuscope_tests::truth::{SecondaryTlbApi, TlbScope};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";
const BTF_MAGIC: u16 = 0xeb9f;
/// `struct btf_header` up to and including `str_len`.
const HEADER_LEN: usize = 24;

/// The API, or `None` when BTF has neither name (or is unreadable: then a warning explains why).
pub fn detect() -> Option<SecondaryTlbApi> {
    match detect_from(Path::new(VMLINUX_BTF)) {
        Ok(api) => {
            if api.is_none() {
                eprintln!("mmuscope-workload: warning: {VMLINUX_BTF} names no mmu_notifier secondary-TLB function");
            }
            api
        }
        Err(e) => {
            eprintln!("mmuscope-workload: warning: kernel API unknown: {e:#}");
            None
        }
    }
}

/// On 6.6+, the scope x86's `flush_tlb_mm_range` passes to `mmu_notifier_arch_invalidate_secondary_tlbs` for a
/// flush of more pages than its single-page ceiling (33): 6.12 first widens it to `(0, TLB_FLUSH_ALL)`
/// (arch/x86/mm/tlb.c:1054-1058, then :1083), 7.2 passes the range itself (tlb.c:1402-1405, :1462). No type or
/// function name in BTF tells the two apart, so the kernel series does, for the two series whose source was read;
/// any other: `None` (the truth then gives the count without a scope, and says so).
pub fn flush_scope_above_ceiling() -> Option<TlbScope> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    scope_for_release(&release)
}

fn scope_for_release(release: &str) -> Option<TlbScope> {
    match series(release)? {
        (6, 12) => Some(TlbScope::FullMm),
        (7, 2) => Some(TlbScope::Range),
        _ => None,
    }
}

pub fn detect_from(path: &Path) -> Result<Option<SecondaryTlbApi>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let strings = string_section(&data).with_context(|| format!("parsing {}", path.display()))?;
    let has = |name: &str| contains_string(strings, name);
    Ok(if has("__mmu_notifier_arch_invalidate_secondary_tlbs") {
        Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs)
    } else if has("__mmu_notifier_invalidate_range") {
        Some(SecondaryTlbApi::InvalidateRange)
    } else {
        None
    })
}

/// Whether the NUL-separated string table holds exactly `name`. The table starts with the empty string, so every
/// entry is preceded by a NUL. `memmem` (libc's, optimised even in debug builds) scans the ~2 MB in a millisecond.
fn contains_string(strings: &[u8], name: &str) -> bool {
    let mut needle = Vec::with_capacity(name.len() + 2);
    needle.push(0);
    needle.extend_from_slice(name.as_bytes());
    needle.push(0);
    // SAFETY: both pointers and lengths describe live slices; memmem only reads them.
    let hit = unsafe { libc::memmem(strings.as_ptr().cast(), strings.len(), needle.as_ptr().cast(), needle.len()) };
    !hit.is_null()
}

/// The string section of a (native-endian) BTF blob.
fn string_section(data: &[u8]) -> Result<&[u8]> {
    if data.len() < HEADER_LEN {
        bail!("{} bytes is too short for a BTF header", data.len());
    }
    let u32_at = |off: usize| u32::from_ne_bytes(data[off..off + 4].try_into().expect("4 bytes")) as usize;
    let magic = u16::from_ne_bytes([data[0], data[1]]);
    if magic != BTF_MAGIC {
        bail!("not BTF (magic {magic:#06x})");
    }
    let (hdr_len, str_off, str_len) = (u32_at(4), u32_at(16), u32_at(20));
    let start = hdr_len.checked_add(str_off).context("string section offset overflows")?;
    let end = start.checked_add(str_len).context("string section length overflows")?;
    data.get(start..end).with_context(|| format!("string section {start}..{end} is outside the {} bytes", data.len()))
}

/// Whether `try_to_migrate_one` splits a PMD-mapped THP inside its page walk, under its own bracket (6.16+,
/// commit 60fbb14396d5 "mm/huge_memory: adjust try_to_migrate_one() and split_huge_pmd_locked()"), rather than
/// through `split_huge_pmd_address` before opening it (`__split_huge_pmd`'s bracket first). BTF tells them apart by
/// `split_huge_pmd_locked`'s parameters: the same change series dropped its `folio` parameter (b960818d51b3). `None`
/// where the kernel has no such function (6.1: the split always comes first). Parses every BTF type: seconds under
/// TCG, so only the scenarios that need it ask.
pub fn migrate_splits_in_walk() -> Result<Option<bool>> {
    let btf = mmuscope::kernel::KernelBtf::open(Path::new(VMLINUX_BTF))?;
    let proto = btf.function("split_huge_pmd_locked").context("reading split_huge_pmd_locked from BTF")?;
    Ok(proto.map(|p| !p.params.iter().any(|name| name == "folio")))
}

/// Whether mprotect flushes the TLB through an `mmu_gather` (6.0+, commit 4a18419f71cd "mm/mprotect: use
/// mmu_gather"), whose `tlb_finish_mmu` calls the pre-6.6 secondary-TLB hook again after the bracket's `_end`. BTF
/// tells by `change_protection`'s first parameter: `tlb` since that commit, `vma` before (5.10, where
/// `change_protection_range` ends with a plain `flush_tlb_range`, which calls no notifier). Parses every BTF type.
pub fn mprotect_gathers() -> Result<bool> {
    let btf = mmuscope::kernel::KernelBtf::open(Path::new(VMLINUX_BTF))?;
    let proto = btf.function("change_protection").context("reading change_protection from BTF")?;
    let proto = proto.context("change_protection is not a function in BTF")?;
    Ok(proto.params.first().is_some_and(|name| name == "tlb"))
}

/// Whether `try_to_unmap_one` splits a PMD-mapped THP inside its page walk, under the bracket it opened (6.11+), rather
/// than through `split_huge_pmd_address` before opening it: `split_huge_pmd_locked` came with that change ("mm/rmap:
/// integrate PMD-mapped folio splitting into pagewalk loop"). A name look-up in the string table, as [`detect`].
pub fn unmap_splits_in_walk() -> Result<bool> {
    let data = std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?;
    let strings = string_section(&data).with_context(|| format!("parsing {VMLINUX_BTF}"))?;
    Ok(contains_string(strings, "split_huge_pmd_locked"))
}

/// Whether `fork()` copies a maybe-pinned anonymous hugetlb page eagerly (5.13+, commit 4eae4efa2c29 "hugetlb: do
/// early cow when page pinned on src mm") rather than sharing it (5.10 mm/hugetlb.c `copy_hugetlb_page_range`:
/// `get_page` + `page_dup_rmap` for every anonymous huge page). BTF cannot tell: the test (`page_needs_cow_for_dma`,
/// later `page_try_dup_anon_rmap`/`hugetlb_try_dup_anon_rmap`) is inline and the function the commit added,
/// `hugetlb_install_page` (`hugetlb_install_folio` since), is inlined into its one caller — absent from the BTF of
/// all four kernels of the matrix. So the kernel series does: the running kernel's release, 5.13 or later.
pub fn fork_copies_pinned_hugetlb() -> Result<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").context("reading the kernel release")?;
    series(&release).map(|s| s >= (5, 13)).with_context(|| format!("kernel release {release:?} has no series"))
}

/// `(major, minor)` of a kernel release string (`5.10.0-46-amd64` → `(5, 10)`).
fn series(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Whether the kernel still notifies `change_pte` (`set_pte_at_notify` → `__mmu_notifier_change_pte`; removed in
/// 2024): a name look-up in the string table, as [`detect`].
pub fn has_change_pte() -> Result<bool> {
    let data = std::fs::read(VMLINUX_BTF).with_context(|| format!("reading {VMLINUX_BTF}"))?;
    let strings = string_section(&data).with_context(|| format!("parsing {VMLINUX_BTF}"))?;
    Ok(contains_string(strings, "__mmu_notifier_change_pte"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal BTF blob: header, 4 bytes of "types", then `strings`.
    fn blob(strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_ne_bytes());
        b.extend_from_slice(&[1, 0]); // version, flags
        for v in [HEADER_LEN as u32, 0, 4, 4, strings.len() as u32] {
            b.extend_from_slice(&v.to_ne_bytes());
        }
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(strings);
        b
    }

    fn detect_in(strings: &[u8]) -> Result<Option<SecondaryTlbApi>> {
        let dir = std::env::temp_dir().join(format!("mmuscope-btf-test-{}-{}", std::process::id(), strings.len()));
        std::fs::write(&dir, blob(strings)).unwrap();
        let r = detect_from(&dir);
        let _ = std::fs::remove_file(&dir);
        r
    }

    #[test]
    fn flush_scope_by_series_read() {
        assert_eq!(scope_for_release("6.12.118+deb13-amd64\n"), Some(TlbScope::FullMm));
        assert_eq!(scope_for_release("7.2.13+deb14-amd64"), Some(TlbScope::Range));
        assert_eq!(scope_for_release("6.1.0-57-amd64"), None, "before 6.6 the API differs: not asked");
        assert_eq!(scope_for_release("6.18.0"), None, "a series nobody read");
        assert_eq!(scope_for_release("garbage"), None);
        assert_eq!(series("5.10.0-46-amd64"), Some((5, 10)));
        assert_eq!(series("7.2.13+deb14-amd64\n"), Some((7, 2)));
        assert!(series("5.10.0-46-amd64").unwrap() < (5, 13) && series("5.13.0").unwrap() >= (5, 13));
    }

    #[test]
    fn whole_names_decide() {
        let old = b"\0int\0__mmu_notifier_invalidate_range\0__mmu_notifier_invalidate_range_start\0";
        assert_eq!(detect_in(old).unwrap(), Some(SecondaryTlbApi::InvalidateRange));
        let new = b"\0__mmu_notifier_invalidate_range_start\0__mmu_notifier_arch_invalidate_secondary_tlbs\0";
        assert_eq!(detect_in(new).unwrap(), Some(SecondaryTlbApi::ArchInvalidateSecondaryTlbs));
        let prefix_only = b"\0__mmu_notifier_invalidate_range_end\0invalidate_range\0";
        assert_eq!(detect_in(prefix_only).unwrap(), None, "a longer name is not the function");
    }

    #[test]
    fn malformed_btf_is_an_error_not_a_guess() {
        assert!(string_section(&[0; 8]).is_err());
        let mut b = blob(b"\0x\0");
        b[0] = 0;
        assert!(string_section(&b).unwrap_err().to_string().contains("magic"));
        let mut b = blob(b"\0x\0");
        b[20..24].copy_from_slice(&1000u32.to_ne_bytes());
        assert!(string_section(&b).is_err());
        assert!(detect_from(Path::new("/nonexistent/vmlinux")).is_err());
    }

    /// This host's kernel has one of the two (any kernel with mmu notifiers does).
    #[test]
    fn detects_the_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            // The agent needs BTF and CI's host has it: there the check must run, not pass unseen.
            assert!(!mmuscope_tests::harness::prereq::in_ci(), "{VMLINUX_BTF} missing in CI");
            eprintln!("SKIPPED: no {VMLINUX_BTF}");
            return;
        }
        let api = detect_from(path).unwrap();
        println!("{api:?}");
        assert!(api.is_some());
    }
}
