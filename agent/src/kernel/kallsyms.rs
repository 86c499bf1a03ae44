//! Text symbols from `/proc/kallsyms`: whether a function has exactly one out-of-line copy
//! under its plain name, which is what fentry and kprobes attach to.
//!
//! Only the names the caller asks for are kept. The file has over 100,000 lines; reading it whole and counting every
//! text symbol held ~22 MiB at start-up (measured), for the few dozen functions the probe table names.

use std::{
    collections::HashMap,
    io::{self, BufRead, BufReader},
    path::Path,
};

/// Text (`t`/`T`) symbols of the kernel and modules, for the names asked for.
#[derive(Default)]
pub struct Kallsyms {
    /// Wanted name → number of text symbols with that exact name (0 when absent).
    counts: HashMap<&'static str, u32>,
}

impl Kallsyms {
    pub const PATH: &'static str = "/proc/kallsyms";

    /// Counts the text symbols named as one of `wanted`, reading the file a line at a time.
    pub fn load(path: &Path, wanted: &[&'static str]) -> io::Result<Self> {
        let mut k = Self::wanting(wanted);
        let mut reader = BufReader::new(std::fs::File::open(path)?);
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            k.count(&line);
            line.clear();
        }
        Ok(k)
    }

    /// Parses the `/proc/kallsyms` text format (`ADDR TYPE NAME [MODULE]`) for `wanted`.
    #[cfg(test)]
    pub fn parse(text: &str, wanted: &[&'static str]) -> Self {
        let mut k = Self::wanting(wanted);
        text.lines().for_each(|line| k.count(line));
        k
    }

    fn wanting(wanted: &[&'static str]) -> Self {
        Self { counts: wanted.iter().map(|n| (*n, 0)).collect() }
    }

    fn count(&mut self, line: &str) {
        let mut it = line.split_whitespace();
        let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { return };
        if matches!(kind, "t" | "T")
            && let Some(n) = self.counts.get_mut(name)
        {
            *n += 1;
        }
    }

    /// How many text symbols are named exactly `name` (0: absent or only `.isra`/`.constprop`
    /// clones; >1: static duplicates, ambiguous for attachment by name). `name` must be one of those asked for at
    /// load time; any other would read as absent.
    pub fn text_count(&self, name: &str) -> u32 {
        debug_assert!(self.is_empty() || self.counts.contains_key(name), "{name} was not asked for at load time");
        self.counts.get(name).copied().unwrap_or(0)
    }

    /// Nothing was read (kallsyms unreadable, or nothing asked for).
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_plain_text_symbols_of_the_wanted_names() {
        let text = "ffffffff81000000 T _stext\n\
                    ffffffff81100000 t unmap_single_vma.isra.0\n\
                    ffffffff81200000 T __mmu_notifier_invalidate_range_start\n\
                    ffffffff81300000 t dup_name\n\
                    ffffffff81400000 t dup_name\n\
                    ffffffff81500000 D some_data\n\
                    ffffffffc0000000 t kvm_mmu_notifier_release\t[kvm]\n";
        let wanted = [
            "__mmu_notifier_invalidate_range_start",
            "unmap_single_vma",
            "dup_name",
            "some_data",
            "kvm_mmu_notifier_release",
        ];
        let k = Kallsyms::parse(text, &wanted);
        assert_eq!(k.text_count("__mmu_notifier_invalidate_range_start"), 1);
        assert_eq!(k.text_count("unmap_single_vma"), 0);
        assert_eq!(k.text_count("dup_name"), 2);
        assert_eq!(k.text_count("some_data"), 0);
        assert_eq!(k.text_count("kvm_mmu_notifier_release"), 1);
        assert!(!k.is_empty(), "read, even though some wanted names are absent");
    }

    #[test]
    fn reads_the_file_a_line_at_a_time() {
        let path = std::env::temp_dir().join(format!("mmuscope-kallsyms-{}", std::process::id()));
        std::fs::write(&path, "ffffffff81000000 T one\nffffffff81000010 t two\nffffffff81000020 t two\n").unwrap();
        let k = Kallsyms::load(&path, &["one", "two", "three"]).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((k.text_count("one"), k.text_count("two"), k.text_count("three")), (1, 2, 0));
    }
}
