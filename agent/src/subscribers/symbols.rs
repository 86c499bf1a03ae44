//! Callback address → text symbol (and module), from `/proc/kallsyms`.
//!
//! The file shows real addresses only to an opener with CAP_SYSLOG (or perf_event_paranoid ≤ 1)
//! and the kernel decides at open time, so it is opened once at start-up, before capabilities
//! are dropped, and re-read from the start (seek 0) whenever a sweep meets an address not seen
//! before: a module loaded later (e.g. `kvm` on the first VM) then still resolves. Answers,
//! including "no symbol", are cached; only the few addresses sweeps meet are kept. Reading the
//! whole file takes from a tenth of a second to seconds (emulated guests), so the callbacks of
//! known subscribers are preloaded at start-up and a sweep only reads it for unknown ones.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufRead, BufReader, Seek},
};

/// A text symbol and the module it belongs to (`None`: built into the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub module: Option<String>,
}

#[derive(Default)]
pub struct Symbols {
    file: Option<File>,
    cache: HashMap<u64, Option<Symbol>>,
    /// Preloaded names → (address, how many text symbols have the name).
    by_name: HashMap<String, (u64, u32)>,
}

impl Symbols {
    /// Opens `/proc/kallsyms` (call while privileged). Unreadable → every address stays unnamed.
    pub fn open() -> Self {
        let file = File::open("/proc/kallsyms")
            .inspect_err(|e| tracing::warn!("/proc/kallsyms unreadable ({e}): subscribers will be `unknown`"))
            .ok();
        Self { file, cache: HashMap::new(), by_name: HashMap::new() }
    }

    /// Looks up every address of `addrs` not answered yet (one pass over the file).
    pub fn resolve(&mut self, addrs: impl IntoIterator<Item = u64>) {
        let wanted: HashSet<u64> = addrs.into_iter().filter(|a| *a != 0 && !self.cache.contains_key(a)).collect();
        if wanted.is_empty() {
            return;
        }
        let mut found = HashMap::new();
        if let Some(f) = self.file.as_mut() {
            match f.rewind().and_then(|()| lookup(BufReader::new(&*f), &wanted)) {
                Ok(m) => found = m,
                Err(e) => tracing::warn!("reading /proc/kallsyms failed: {e}"),
            }
        }
        for a in wanted {
            let sym = found.remove(&a);
            self.cache.insert(a, sym);
        }
    }

    pub fn get(&self, addr: u64) -> Option<&Symbol> {
        self.cache.get(&addr).and_then(Option::as_ref)
    }
}

/// The text symbol at exactly each wanted address (callbacks point at function starts).
pub fn lookup(reader: impl BufRead, wanted: &HashSet<u64>) -> io::Result<HashMap<u64, Symbol>> {
    let mut out = HashMap::new();
    for line in reader.lines() {
        let line = line?;
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
        if addr == 0 || !wanted.contains(&addr) || out.contains_key(&addr) {
            continue;
        }
        let module = it.next().map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
        out.insert(addr, Symbol { name: name.to_string(), module });
    }
    Ok(out)
}

#[cfg(test)]
impl Symbols {
    pub fn insert_for_test(&mut self, addr: u64, sym: Symbol) {
        self.cache.insert(addr, Some(sym));
    }
}

impl Symbols {
    /// Reads kallsyms once and caches every text symbol whose name starts with one of `prefixes` (the callbacks of
    /// known subscribers), so that sweeps meeting them never re-read the file (slow on big or emulated machines).
    pub fn preload(&mut self, prefixes: &[&str]) {
        let Some(f) = self.file.as_mut() else { return };
        let mut shown = false;
        let read = f.rewind().and_then(|()| {
            for line in BufReader::new(&*f).lines() {
                let line = line?;
                let mut it = line.split_whitespace();
                let (Some(addr), Some("t" | "T"), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
                shown |= addr.bytes().any(|b| b != b'0');
                if !prefixes.iter().any(|p| name.starts_with(p)) {
                    continue;
                }
                let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
                let module = it.next().map(|m| m.trim_start_matches('[').trim_end_matches(']').to_string());
                self.by_name.entry(name.to_string()).or_insert((addr, 0)).1 += 1;
                if addr != 0 {
                    self.cache.entry(addr).or_insert(Some(Symbol { name: name.to_string(), module }));
                }
            }
            Ok(())
        });
        match read {
            Err(e) => tracing::warn!("reading /proc/kallsyms failed: {e}"),
            Ok(()) if !shown => tracing::warn!(
                "/proc/kallsyms shows no addresses to this agent (it needs CAP_SYSLOG at start-up, or \
                 kernel.perf_event_paranoid <= 1 with kernel.kptr_restrict = 0): subscribers will be `unknown` and \
                 their callbacks not timed"
            ),
            Ok(()) => {}
        }
    }

    /// Address of a preloaded name that is exactly one text symbol (static duplicates are ambiguous for attachment
    /// by name).
    pub fn address_of(&self, name: &str) -> Option<u64> {
        self.by_name.get(name).filter(|(a, n)| *n == 1 && *a != 0).map(|(a, _)| *a)
    }
}
