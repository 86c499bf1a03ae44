//! Swap for the `swap-out` scenario: the active swap areas (`/proc/swaps`), or a temporary zram swap device that
//! the scenario creates and removes again.
//!
//! zram set-up without tools: `hot_add` a device (or use an unused `zram0` on kernels without `zram-control`),
//! write its `disksize`, write a version-1 swap header ourselves (what `mkswap` writes: `SWAPSPACE2` in the last ten
//! bytes of the first page, `version` 1 and `last_page` at byte 1024), `swapon(2)`. Tear-down: `swapoff`, `reset`,
//! `hot_remove`.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use crate::sys::errno_name;

pub const PROC_SWAPS: &str = "/proc/swaps";
const ZRAM_CONTROL: &str = "/sys/class/zram-control";

/// One line of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapArea {
    pub filename: String,
    pub kind: String,
    pub size_kib: u64,
    pub used_kib: u64,
}

/// Parses `/proc/swaps` (header line, then `Filename Type Size Used Priority`; names with spaces are `\040`).
pub fn parse_proc_swaps(text: &str) -> Vec<SwapArea> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            Some(SwapArea {
                filename: f.next()?.replace("\\040", " "),
                kind: f.next()?.to_owned(),
                size_kib: f.next()?.parse().ok()?,
                used_kib: f.next()?.parse().ok()?,
            })
        })
        .collect()
}

pub fn active() -> Result<Vec<SwapArea>> {
    Ok(parse_proc_swaps(&fs::read_to_string(PROC_SWAPS).with_context(|| format!("reading {PROC_SWAPS}"))?))
}

/// A zram swap device this process created; removed on drop.
pub struct ZramSwap {
    index: u32,
    dev: PathBuf,
    hot_added: bool,
    swapped_on: bool,
}

impl ZramSwap {
    /// Creates, formats and enables a zram swap device of `mib` MiB.
    pub fn create(mib: u64, page: usize) -> Result<Self> {
        let (index, hot_added) = allocate_device()?;
        let mut zram = Self { index, dev: PathBuf::from(format!("/dev/zram{index}")), hot_added, swapped_on: false };
        let sys = zram.sysfs();
        choose_built_in_compressor(&sys);
        fs::write(sys.join("disksize"), format!("{}\n", mib << 20))
            .with_context(|| format!("setting {}/disksize to {mib} MiB", sys.display()))?;
        write_swap_header(&zram.dev, mib << 20, page)?;
        let path = std::ffi::CString::new(zram.dev.as_os_str().as_encoded_bytes()).expect("no NUL in /dev/zramN");
        // SAFETY: `path` is a valid NUL-terminated string; flags 0 = default priority.
        if unsafe { libc::swapon(path.as_ptr(), 0) } != 0 {
            bail!("swapon({}): {}", zram.dev.display(), errno_name(&io::Error::last_os_error()));
        }
        zram.swapped_on = true;
        Ok(zram)
    }

    pub fn device(&self) -> String {
        self.dev.display().to_string()
    }

    fn sysfs(&self) -> PathBuf {
        PathBuf::from(format!("/sys/block/zram{}", self.index))
    }
}

impl Drop for ZramSwap {
    fn drop(&mut self) {
        if self.swapped_on {
            let path = std::ffi::CString::new(self.dev.as_os_str().as_encoded_bytes()).expect("no NUL");
            // SAFETY: valid NUL-terminated path.
            if unsafe { libc::swapoff(path.as_ptr()) } != 0 {
                eprintln!(
                    "mmuscope-workload: warning: swapoff({}): {}",
                    self.dev.display(),
                    errno_name(&io::Error::last_os_error())
                );
            }
        }
        let _ = fs::write(self.sysfs().join("reset"), "1\n");
        if self.hot_added {
            let _ = fs::write(format!("{ZRAM_CONTROL}/hot_remove"), format!("{}\n", self.index));
        }
    }
}

/// Prefers `lzo-rle`/`lzo` (built into Debian's kernels) over a default such as 6.12's `lz4`, whose crypto modules
/// a minimal guest may lack (there is no modprobe to load them when `disksize` is set).
fn choose_built_in_compressor(sys: &std::path::Path) {
    let path = sys.join("comp_algorithm");
    let Ok(listed) = fs::read_to_string(&path) else { return };
    let names: Vec<&str> = listed.split_ascii_whitespace().map(|n| n.trim_matches(['[', ']'])).collect();
    if let Some(pick) = ["lzo-rle", "lzo"].into_iter().find(|p| names.contains(p)) {
        let _ = fs::write(&path, format!("{pick}\n"));
    }
}

/// A fresh zram device: `hot_add` where `zram-control` exists, else `zram0` if it is unused (disksize 0).
fn allocate_device() -> Result<(u32, bool)> {
    let control = format!("{ZRAM_CONTROL}/hot_add");
    if let Ok(id) = fs::read_to_string(&control) {
        let index = id.trim().parse().with_context(|| format!("{control} returned {id:?}"))?;
        return Ok((index, true));
    }
    match fs::read_to_string("/sys/block/zram0/disksize") {
        Ok(size) if size.trim() == "0" => Ok((0, false)),
        Ok(_) => bail!("zram0 is in use and {ZRAM_CONTROL} is missing: cannot create a zram swap device"),
        Err(_) => bail!("no zram devices: load the zram module (modprobe zram / insmod zram.ko) to use --zram-mib"),
    }
}

/// The first page of a version-1 swap area of `bytes` bytes with no bad pages.
pub fn swap_header(bytes: u64, page: usize) -> Result<Vec<u8>> {
    let pages = bytes / page as u64;
    if pages < 10 {
        bail!("a swap area of {bytes} bytes is too small");
    }
    let last_page = u32::try_from(pages - 1).context("swap area too large for a v1 header")?;
    let mut h = vec![0u8; page];
    h[1024..1028].copy_from_slice(&1u32.to_ne_bytes()); // version
    h[1028..1032].copy_from_slice(&last_page.to_ne_bytes());
    // nr_badpages (1032..1036) = 0; uuid and label left zero.
    h[page - 10..].copy_from_slice(b"SWAPSPACE2");
    Ok(h)
}

fn write_swap_header(dev: &PathBuf, bytes: u64, page: usize) -> Result<()> {
    let header = swap_header(bytes, page)?;
    let f = OpenOptions::new().write(true).open(dev).with_context(|| format!("opening {}", dev.display()))?;
    f.write_all_at(&header, 0).with_context(|| format!("writing the swap header to {}", dev.display()))?;
    f.sync_all().with_context(|| format!("syncing {}", dev.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_swaps() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                    /dev/zram1                              partition\t65532\t\t128\t\t-2\n\
                    /swap\\040file                           file\t\t1024\t\t0\t\t-3\n";
        let areas = parse_proc_swaps(text);
        assert_eq!(areas.len(), 2);
        assert_eq!(
            areas[0],
            SwapArea { filename: "/dev/zram1".into(), kind: "partition".into(), size_kib: 65532, used_kib: 128 }
        );
        assert_eq!(areas[1].filename, "/swap file");
        assert!(parse_proc_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn swap_header_layout() {
        let h = swap_header(64 << 20, 4096).unwrap();
        assert_eq!(h.len(), 4096);
        assert_eq!(&h[4086..], b"SWAPSPACE2");
        assert_eq!(u32::from_ne_bytes(h[1024..1028].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(h[1028..1032].try_into().unwrap()), (64 << 20) / 4096 - 1);
        assert!(h[..1024].iter().all(|&b| b == 0));
        assert!(swap_header(4096 * 4, 4096).is_err());
    }
}
