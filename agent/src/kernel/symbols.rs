//! A start-up snapshot of the kernel's text symbols, for naming kernel addresses: the frames of `/api/v1/stacks` and
//! `/api/v1/slow`, and the callbacks the subscriber inventory's first sweep meets.
//!
//! After the capability drop `/proc/kallsyms` shows every address as 0 (the agent keeps no CAP_SYSLOG), so the
//! text symbols (vmlinux, modules, loaded BPF programs) are copied while the agent is still privileged, into an
//! unnamed file (`O_TMPFILE`, mode 0600, in the temporary directory: under the unit a private `/tmp`): nothing else
//! can open it, it vanishes with the agent, and it costs no resident memory between requests (121,000 text
//! symbols, 5.4 MB on this project's 6.18 host, live in the page cache instead of the agent's heap; the start-up RSS
//! target is 40 MiB). A request reads it twice, keeping only what its own addresses need. It is the only start-up
//! read of the whole of `/proc/kallsyms`, which the kernel generates line by line (seconds on a big or emulated
//! machine: ~12 s in a TCG guest of 6.12); the planner's read before loading only counts the functions it names.

use std::{
    collections::{BTreeMap, HashSet},
    fs::File,
    io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write},
    path::Path,
    sync::Mutex,
};

/// Addresses further than this past the nearest symbol are shown raw (a gap, or an address outside the snapshot).
const MAX_OFFSET: u64 = 1 << 20;

/// The start-up copy of the kernel's text symbols, or why there is none.
pub struct SymbolSnapshot {
    /// Locked while a resolution reads it: clones of a file descriptor share its offset, so two requests reading at
    /// once (`/api/v1/stacks` and `/api/v1/slow`) would read each other's positions.
    file: Result<Mutex<File>, String>,
}

impl SymbolSnapshot {
    /// Copies the text symbols of `/proc/kallsyms` (call while privileged).
    pub fn snapshot() -> Self {
        Self::snapshot_from(Path::new("/proc/kallsyms"), &std::env::temp_dir())
    }

    /// Copies the text symbols of `source` into an unnamed file in `dir`.
    pub fn snapshot_from(source: &Path, dir: &Path) -> Self {
        let file = copy_text_symbols(source, dir);
        match &file {
            Ok((_, n)) => tracing::info!(symbols = n, "kernel text symbols copied from kallsyms"),
            Err(why) => tracing::warn!("kernel addresses stay unnamed in stacks: {why}"),
        }
        Self { file: file.map(|(f, _)| Mutex::new(f)) }
    }

    /// A second handle on the snapshot with an offset of its own (through `/proc/self/fd`), for one reader that must
    /// not share the lock of [`Self::resolve`]; `None` when there is no snapshot.
    pub fn reopen(&self) -> Option<File> {
        use std::os::fd::AsRawFd;
        let file = self.file.as_ref().ok()?;
        let fd = file.lock().unwrap_or_else(|e| e.into_inner()).as_raw_fd();
        File::open(format!("/proc/self/fd/{fd}"))
            .inspect_err(|e| tracing::warn!("reopening the kernel symbol snapshot failed: {e}"))
            .ok()
    }

    /// Why symbols are unavailable, if they are.
    pub fn unavailable(&self) -> Option<&str> {
        self.file.as_ref().err().map(String::as_str)
    }

    /// Names for `addrs`: `function` or `function [module]`; addresses without a symbol are absent.
    pub fn resolve(&self, addrs: &HashSet<u64>) -> std::io::Result<BTreeMap<u64, String>> {
        let Ok(file) = &self.file else { return Ok(BTreeMap::new()) };
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        f.seek(SeekFrom::Start(0))?;
        resolve(BufReader::new(&mut *f), addrs)
    }
}

/// A text symbol of a kallsyms line, with a real address: address, name, module.
fn text_symbol(line: &str) -> Option<(u64, &str, Option<&str>)> {
    let (addr, kind, name, module) = parse_line(line)?;
    (matches!(kind, 't' | 'T') && addr != 0).then_some((addr, name, module))
}

/// One parsed kallsyms line: address, type letter, name, module (without brackets).
fn parse_line(line: &str) -> Option<(u64, char, &str, Option<&str>)> {
    let mut it = line.split_ascii_whitespace();
    let addr = u64::from_str_radix(it.next()?, 16).ok()?;
    let kind = it.next()?.chars().next()?;
    let name = it.next()?;
    let module = it.next().map(|m| m.trim_start_matches('[').trim_end_matches(']'));
    Some((addr, kind, name, module))
}

fn copy_text_symbols(source: &Path, dir: &Path) -> Result<(File, u64), String> {
    let input = File::open(source).map_err(|e| format!("{}: {e}", source.display()))?;
    let out =
        unnamed_file(dir).map_err(|e| format!("no private file for the symbol snapshot in {}: {e}", dir.display()))?;
    let mut w = BufWriter::new(out);
    let (mut n, mut zero) = (0u64, 0u64);
    for line in BufReader::new(input).lines() {
        let line = line.map_err(|e| format!("{}: {e}", source.display()))?;
        let Some((addr, kind, ..)) = parse_line(&line) else { continue };
        if !matches!(kind, 't' | 'T') {
            continue;
        }
        if addr == 0 {
            zero += 1;
            continue;
        }
        writeln!(w, "{line}").map_err(|e| format!("writing the symbol snapshot: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err(if zero > 0 {
            format!(
                "{} shows no addresses to this agent (no CAP_SYSLOG at start-up, or kptr_restrict=2)",
                source.display()
            )
        } else {
            format!("{} has no text symbols", source.display())
        });
    }
    let file = w.into_inner().map_err(|e| format!("writing the symbol snapshot: {}", e.error()))?;
    Ok((file, n))
}

/// An unnamed read-write file in `dir` (`O_TMPFILE`), or, where the file system lacks it, one unlinked at once.
fn unnamed_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = std::fs::OpenOptions::new().read(true).write(true).mode(0o600).custom_flags(libc::O_TMPFILE).open(dir);
    match tmp {
        Ok(f) => Ok(f),
        Err(_) => {
            let path = dir.join(format!(".mmuscope-kallsyms-{}", std::process::id()));
            let f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

/// Two passes over a kallsyms text: the sorted symbol starts, then the names of the starts `addrs` fall in.
fn resolve<R: BufRead + Seek>(mut r: R, addrs: &HashSet<u64>) -> std::io::Result<BTreeMap<u64, String>> {
    if addrs.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut starts = Vec::new();
    let mut line = String::new();
    while r.read_line(&mut line)? > 0 {
        if let Some((addr, ..)) = text_symbol(&line) {
            starts.push(addr);
        }
        line.clear();
    }
    starts.sort_unstable();
    starts.dedup();
    // Each address's symbol start, when close enough.
    let mut owner: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for &a in addrs {
        let i = starts.partition_point(|s| *s <= a);
        if i > 0 && a - starts[i - 1] < MAX_OFFSET {
            owner.entry(starts[i - 1]).or_default().push(a);
        }
    }
    drop(starts);
    r.seek(SeekFrom::Start(0))?;
    let mut out = BTreeMap::new();
    while r.read_line(&mut line)? > 0 {
        if let Some((start, name, module)) = text_symbol(&line)
            && let Some(users) = owner.remove(&start)
        {
            let text = match module {
                Some(m) => format!("{name} [{m}]"),
                None => name.to_string(),
            };
            for a in users {
                out.insert(a, text.clone());
            }
        }
        line.clear();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    const FAKE: &str = "\
0000000000000000 A fixed_percpu_data
ffffffff81000000 T _stext
ffffffff81001000 t do_madvise
ffffffff81002000 T __x64_sys_madvise
ffffffff81003000 D some_data
ffffffff81004000 t zap_page_range_single
ffffffffc0001000 t kvm_mmu_notifier_invalidate_range_start\t[kvm]
ffffffffc0002000 t bpf_prog_0123456789abcdef_kvm_unmap_tp_btf\t[bpf]
";

    fn set(a: &[u64]) -> HashSet<u64> {
        a.iter().copied().collect()
    }

    #[test]
    fn resolves_to_the_enclosing_symbol_with_modules() {
        let got = resolve(
            Cursor::new(FAKE),
            &set(&[0xffffffff81001234, 0xffffffff81002000, 0xffffffffc0001010, 0xffffffffc0002008, 0x1000]),
        )
        .unwrap();
        assert_eq!(got[&0xffffffff81001234], "do_madvise");
        assert_eq!(got[&0xffffffff81002000], "__x64_sys_madvise");
        assert_eq!(got[&0xffffffffc0001010], "kvm_mmu_notifier_invalidate_range_start [kvm]");
        assert_eq!(got[&0xffffffffc0002008], "bpf_prog_0123456789abcdef_kvm_unmap_tp_btf [bpf]");
        assert!(!got.contains_key(&0x1000), "below every symbol: no name");
    }

    #[test]
    fn far_addresses_stay_raw() {
        let got = resolve(Cursor::new(FAKE), &set(&[0xffffffffc0002000 + MAX_OFFSET])).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn snapshot_keeps_text_symbols_only_and_reports_zeroed_addresses() {
        let dir = std::env::temp_dir().join(format!("mmuscope-kallsyms-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = dir.join("kallsyms");
        std::fs::write(&src, FAKE).unwrap();
        let k = SymbolSnapshot::snapshot_from(&src, &dir);
        assert!(k.unavailable().is_none());
        let got = k.resolve(&set(&[0xffffffff81003010, 0xffffffff81004001])).unwrap();
        // `some_data` (D) is not copied: its address belongs to the text symbol before it.
        assert_eq!(got[&0xffffffff81003010], "__x64_sys_madvise");
        assert_eq!(got[&0xffffffff81004001], "zap_page_range_single");
        // A reopened handle reads the same lines from its own offset, without disturbing `resolve`.
        let mut again = String::new();
        std::io::Read::read_to_string(&mut k.reopen().unwrap(), &mut again).unwrap();
        assert_eq!(again.lines().count(), 6, "{again}");
        assert_eq!(k.resolve(&set(&[0xffffffff81004001])).unwrap()[&0xffffffff81004001], "zap_page_range_single");
        // Nothing but the fixture is left in the directory: the snapshot has no name.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

        let zeroed: String = FAKE.lines().map(|l| format!("0000000000000000{}\n", &l[16..])).collect();
        std::fs::write(&src, zeroed).unwrap();
        let k = SymbolSnapshot::snapshot_from(&src, &dir);
        assert!(k.unavailable().unwrap().contains("no addresses"), "{:?}", k.unavailable());
        assert!(k.resolve(&set(&[0xffffffff81001000])).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
