//! Callback address → text symbol (and module), from `/proc/kallsyms`.
//!
//! The file shows real addresses only to an opener with CAP_SYSLOG (or perf_event_paranoid ≤ 1)
//! and the kernel decides at open time, so it is opened once at start-up, before capabilities
//! are dropped. At start-up it is not read at all: the callbacks of known subscribers are preloaded
//! ([`Symbols::preload`]) and the first sweep's addresses answered ([`Symbols::resolve_now`]) from the agent's
//! start-up copy of the text symbols ([`crate::kernel::symbols::SymbolSnapshot`]), which the kernel had to generate
//! once anyway (seconds on a big or emulated machine, for each read).
//!
//! Later, an address not seen before (a module loaded after start-up: `kvm` on the first VM, a GPU
//! driver, the project's test module) needs the file read again from the start (seek 0). That read
//! takes from a tenth of a second to more than ten (172,000 lines on 6.12, in an emulated guest),
//! and sweeps run inside `/metrics` and `/api/v1/subscribers` requests, so it never runs there:
//! [`Symbols::request`] queues the address for one reader thread, which owns the handle from then
//! on, and returns at once. Until the reader answers, the address has no name (its subscriber
//! reads `unknown` and [`Symbols::pending`] says why); when it has answered, [`Symbols::answered`]
//! moves and the sweeper re-takes the inventory with the names. Answers, including "no symbol", are
//! cached; only the few addresses sweeps meet are kept, with the other text symbols of the modules that hold
//! them (a module's next callback, e.g. the test module's second notifier, then needs no read: a few thousand
//! entries at most for `kvm`, none for built-in callbacks).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufRead, BufReader, Seek},
    sync::{Arc, Mutex, MutexGuard, mpsc},
};

/// A text symbol and the module it belongs to (`None`: built into the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    pub name: String,
    pub module: Option<String>,
}

/// What the sweeper and the reader thread share.
#[derive(Default)]
struct Answers {
    cache: HashMap<u64, Option<Symbol>>,
    /// Queued for the reader thread, not answered yet.
    pending: HashSet<u64>,
    /// Bumped by every answer of the reader thread.
    generation: u64,
}

/// What the reader thread reads: the names of the wanted addresses it finds (kallsyms, or a test's stand-in).
type Source = Box<dyn FnMut(&HashSet<u64>) -> Found + Send>;

#[derive(Default)]
pub struct Symbols {
    answers: Arc<Mutex<Answers>>,
    /// The privileged handle, until the reader thread takes it.
    file: Option<File>,
    /// The start-up copy of the text symbols (same format), read instead of `file` until [`Self::started`].
    start_up: Option<File>,
    /// Replaces `file` for the reader thread (tests).
    source: Option<Source>,
    /// The reader thread's queue, once started.
    reader: Option<mpsc::Sender<HashSet<u64>>>,
    /// Preloaded names → (address, how many text symbols have the name).
    by_name: HashMap<String, (u64, u32)>,
}

impl Symbols {
    /// Opens `/proc/kallsyms` (call while privileged). Unreadable → every address stays unnamed. Until
    /// [`Self::started`], lookups read `start_up` instead when there is one: the agent's copy of the text symbols.
    pub fn open(start_up: Option<File>) -> Self {
        let file = File::open("/proc/kallsyms")
            .inspect_err(|e| tracing::warn!("/proc/kallsyms unreadable ({e}): subscribers will be `unknown`"))
            .ok();
        Self { file, start_up, ..Self::default() }
    }

    /// Start-up is over: the start-up copy is closed, and addresses met from now on go to the reader thread.
    pub fn started(&mut self) {
        self.start_up = None;
    }

    /// What start-up lookups read: the start-up copy, else kallsyms itself.
    fn start_up_source(&mut self) -> Option<&mut File> {
        self.start_up.as_mut().or(self.file.as_mut())
    }

    fn answers(&self) -> MutexGuard<'_, Answers> {
        self.answers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Looks up every address of `addrs` not answered yet, reading the file here (one pass). Start-up only: it
    /// blocks for as long as the read takes.
    pub fn resolve_now(&mut self, addrs: impl IntoIterator<Item = u64>) {
        let wanted = self.unanswered(addrs);
        if wanted.is_empty() {
            return;
        }
        let found = match self.start_up_source() {
            Some(f) => read(f, &wanted),
            None => Found::default(), // unreadable, or the reader thread has it: never blocks on it
        };
        store(&mut self.answers(), wanted, found);
    }

    /// Queues every address of `addrs` not answered or queued yet for the reader thread (started on first use, so
    /// that it never holds the start-up privileges) and returns at once.
    pub fn request(&mut self, addrs: impl IntoIterator<Item = u64>) {
        let wanted: HashSet<u64> = {
            let mut answers = self.answers();
            let new: HashSet<u64> = addrs
                .into_iter()
                .filter(|a| *a != 0 && !answers.cache.contains_key(a) && !answers.pending.contains(a))
                .collect();
            answers.pending.extend(&new);
            new
        };
        if wanted.is_empty() {
            return;
        }
        if self.reader.is_none() {
            let source = self.source.take().or_else(|| {
                let mut f = self.file.take()?;
                Some(Box::new(move |wanted: &HashSet<u64>| read(&mut f, wanted)) as Source)
            });
            self.reader = source.and_then(|s| spawn_reader(s, self.answers.clone()));
        }
        let sent = self.reader.as_ref().is_some_and(|r| r.send(wanted.clone()).is_ok());
        if !sent {
            // No handle (unreadable at start-up) or no thread: answer "no symbol" rather than stay pending.
            self.reader = None;
            store(&mut self.answers(), wanted, Found::default());
        }
    }

    /// The symbol at `addr`, if answered and named.
    pub fn get(&self, addr: u64) -> Option<Symbol> {
        self.answers().cache.get(&addr).cloned().flatten()
    }

    /// Whether `addr` waits for the reader thread.
    pub fn pending(&self, addr: u64) -> bool {
        self.answers().pending.contains(&addr)
    }

    /// Moves whenever the reader thread answered (the names of an inventory taken before may have changed).
    pub fn answered(&self) -> u64 {
        self.answers().generation
    }

    /// The addresses of `addrs` with no answer yet.
    fn unanswered(&self, addrs: impl IntoIterator<Item = u64>) -> HashSet<u64> {
        let answers = self.answers();
        addrs.into_iter().filter(|a| *a != 0 && !answers.cache.contains_key(a)).collect()
    }
}

/// Records the answers for `wanted` (`None` where `found` has none) and the module mates found with them.
fn store(answers: &mut Answers, wanted: HashSet<u64>, mut found: Found) {
    for a in wanted {
        answers.pending.remove(&a);
        let sym = found.named.remove(&a);
        answers.cache.insert(a, sym);
    }
    for (a, sym) in found.mates {
        answers.cache.entry(a).or_insert(Some(sym));
    }
}

/// One pass over the file from its start; a failed read answers nothing (logged).
fn read(f: &mut File, wanted: &HashSet<u64>) -> Found {
    match f.rewind().and_then(|()| lookup(BufReader::new(&*f), wanted)) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("reading /proc/kallsyms failed: {e}");
            Found::default()
        }
    }
}

/// The reader thread: answers queued addresses, batching whatever queued up during a read into the next one.
fn spawn_reader(mut source: Source, answers: Arc<Mutex<Answers>>) -> Option<mpsc::Sender<HashSet<u64>>> {
    let (tx, rx) = mpsc::channel::<HashSet<u64>>();
    let spawned = std::thread::Builder::new().name("mmuscope-kallsyms".into()).spawn(move || {
        while let Ok(mut wanted) = rx.recv() {
            wanted.extend(rx.try_iter().flatten());
            // Answered meanwhile as a module mate of an earlier read: no read for them.
            let unanswered: HashSet<u64> = {
                let a = answers.lock().unwrap_or_else(|e| e.into_inner());
                wanted.iter().copied().filter(|x| !a.cache.contains_key(x)).collect()
            };
            let started = std::time::Instant::now();
            let found = if unanswered.is_empty() { Found::default() } else { source(&unanswered) };
            if !unanswered.is_empty() {
                tracing::info!(
                    addresses = unanswered.len(),
                    named = found.named.len(),
                    ms = started.elapsed().as_millis() as u64,
                    "kallsyms read for subscriber callbacks first met after start-up"
                );
            }
            let mut a = answers.lock().unwrap_or_else(|e| e.into_inner());
            for x in wanted.difference(&unanswered) {
                a.pending.remove(x);
            }
            store(&mut a, unanswered, found);
            a.generation = a.generation.wrapping_add(1);
        }
    });
    spawned.inspect_err(|e| tracing::warn!("no kallsyms reader thread ({e}): new callbacks stay `unknown`")).ok()?;
    Some(tx)
}
/// What one pass over kallsyms found.
#[derive(Debug, Default)]
pub struct Found {
    /// The text symbol at exactly each wanted address (callbacks point at function starts).
    pub named: HashMap<u64, Symbol>,
    /// The other text symbols of the modules that hold a wanted address: a module's other callbacks (e.g. the test
    /// module's secondary-TLB subscriber after its interval notifier) are then answered without another read.
    pub mates: Vec<(u64, Symbol)>,
}

/// One pass over kallsyms text: the wanted addresses' symbols and their modules' other text symbols (kallsyms
/// lists each module's symbols together).
pub fn lookup(reader: impl BufRead, wanted: &HashSet<u64>) -> io::Result<Found> {
    let mut found = Found::default();
    // The module being read, its text symbols so far, and whether one of them was wanted.
    let (mut module, mut lines, mut hit): (Option<String>, Vec<(u64, Symbol)>, bool) = (None, Vec::new(), false);
    for line in reader.lines() {
        let line = line?;
        let mut it = line.split_whitespace();
        let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
        if !matches!(kind, "t" | "T") {
            continue;
        }
        let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
        if addr == 0 {
            continue;
        }
        let this = it.next().map(|m| m.trim_start_matches('[').trim_end_matches(']'));
        if this != module.as_deref() {
            if std::mem::take(&mut hit) {
                found.mates.append(&mut lines);
            }
            lines.clear();
            module = this.map(str::to_string);
        }
        let symbol = || Symbol { name: name.to_string(), module: module.clone() };
        if module.is_some() {
            lines.push((addr, symbol()));
        }
        if wanted.contains(&addr) && !found.named.contains_key(&addr) {
            found.named.insert(addr, symbol());
            hit |= module.is_some();
        }
    }
    if hit {
        found.mates.append(&mut lines);
    }
    Ok(found)
}

#[cfg(test)]
impl Symbols {
    pub fn insert_for_test(&mut self, addr: u64, sym: Symbol) {
        self.answers().cache.insert(addr, Some(sym));
    }

    /// Symbols whose reader thread reads `source` instead of kallsyms.
    pub fn with_source_for_test(source: impl FnMut(&HashSet<u64>) -> Found + Send + 'static) -> Self {
        Self { source: Some(Box::new(source)), ..Self::default() }
    }
}

impl Symbols {
    /// Reads kallsyms once and caches every text symbol whose name starts with one of `prefixes` (the callbacks of
    /// known subscribers), so that sweeps meeting them never re-read the file (slow on big or emulated machines).
    pub fn preload(&mut self, prefixes: &[&str]) {
        let Some(f) = self.start_up.as_mut().or(self.file.as_mut()) else { return };
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
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
                    answers.cache.entry(addr).or_insert(Some(Symbol { name: name.to_string(), module }));
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
