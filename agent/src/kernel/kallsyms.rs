//! Text symbols from `/proc/kallsyms`: whether a function has exactly one out-of-line copy
//! under its plain name, which is what fentry and kprobes attach to.

use std::{collections::HashMap, io, path::Path};

/// Text (`t`/`T`) symbols of the kernel and modules.
#[derive(Default)]
pub struct Kallsyms {
    /// Name → number of text symbols with that exact name.
    counts: HashMap<String, u32>,
}

impl Kallsyms {
    pub const PATH: &'static str = "/proc/kallsyms";

    pub fn load(path: &Path) -> io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Parses the `/proc/kallsyms` text format: `ADDR TYPE NAME [MODULE]`.
    pub fn parse(text: &str) -> Self {
        let mut k = Self::default();
        for line in text.lines() {
            let mut it = line.split_whitespace();
            let (Some(_addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
            if !matches!(kind, "t" | "T") {
                continue;
            }
            *k.counts.entry(name.to_string()).or_default() += 1;
        }
        k
    }

    /// How many text symbols are named exactly `name` (0: absent or only `.isra`/`.constprop`
    /// clones; >1: static duplicates, ambiguous for attachment by name).
    pub fn text_count(&self, name: &str) -> u32 {
        self.counts.get(name).copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_only_plain_text_symbols() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\n\
             ffffffff81100000 t unmap_single_vma.isra.0\n\
             ffffffff81200000 T __mmu_notifier_invalidate_range_start\n\
             ffffffff81300000 t dup_name\n\
             ffffffff81400000 t dup_name\n\
             ffffffff81500000 D some_data\n\
             ffffffffc0000000 t kvm_mmu_notifier_release\t[kvm]\n",
        );
        assert_eq!(k.text_count("__mmu_notifier_invalidate_range_start"), 1);
        assert_eq!(k.text_count("unmap_single_vma"), 0);
        assert_eq!(k.text_count("dup_name"), 2);
        assert_eq!(k.text_count("some_data"), 0);
        assert_eq!(k.text_count("kvm_mmu_notifier_release"), 1);
    }
}
