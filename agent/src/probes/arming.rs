//! Hot-path hooks attached only while something can be seen.
//!
//! Some hooks run on paths every process takes, and only some mms can make them count. They are marked in the
//! table with the condition under which they are needed ([`OnDemand`], set by `TracedHook::while_pinned`,
//! `TracedHook::while_subscribed`, `ProgramSpec::while_pinned`), and each condition's hooks form a group that is
//! attached while the subscriber inventory sees an mm meeting it, and detached when it sees none ([`Arming`], one per
//! group, held in [`Armings`]):
//!
//! - [`OnDemand::WhilePinned`], the fork-copy family's per-copy hook (`fork_copy_*` on the anon-rmap call,
//!   `fork_page_alloc` on `mm_page_alloc`): it runs on every anonymous fault or page allocation of every process,
//!   and only an mm with the has-pinned flag (`MMF_HAS_PINNED`, 5.9–5.12 `mm->has_pinned`) can make it count: no
//!   other fork copies eagerly.
//! - [`OnDemand::WhileSubscribed`], the operation boundaries (`overlapping_brackets`, the system calls that end an
//!   operation), the TLB-gather window (`gather_open`/`gather_close` on every unmap) and the cause windows (`causes`:
//!   `exit_mmap` at every exit, splits, reclaim, migration): they only matter around brackets, and brackets only run
//!   for mms with notifier subscriptions (classic or interval).
//!
//! Even their early exits are a program run per fault, system call or unmap, which processes with nothing to report
//! should not pay.
//!
//! Between the event that makes a group needed and the next sweep the group may be detached. Such an event sends an
//! [`mmuscope_abi::ArmRequest`] through the `ARM_REQUESTS` ring buffer, whose reader (started by `service.rs`)
//! attaches the group at once: `task_newtask` for a fork of a flagged mm (counted as unobserved,
//! `mmuscope_fork_unobserved_total`), the registration hooks (`__mmu_notifier_register`, interval inserts) for a new
//! subscription. Each group has a flag map the programs read (`FORK_COPIES_ARMED`, `SUBSCRIPTIONS_ARMED`) holding
//! the attach generation (0 while detached, a new number at each attach): the per-thread state the subscription
//! hooks keep (open operation, gather window, cause windows) records it, so that a window whose close was missed
//! while detached is stale after attaching again rather than mistagging later brackets. What is left is a small
//! blind spot at each transition: an operation (system call, unmap, exit) already in flight when the group attaches
//! has no opening boundary or window (its brackets are taken as their own operation, with the cause from the task's
//! context), and one in flight when the group detaches loses its close (harmless: nothing is subscribed then, and the
//! generation makes the leftover stale).
//!
//! Switching a group is tens of attach or detach calls, each a trampoline update (milliseconds on hardware, seconds
//! in a TCG guest), so the sweep that decides only says what it wants ([`Arming::want`]): each group's worker thread
//! switches it, and the scrape or API request that swept does not wait. Only the latest wish counts. A detach is
//! checked by the wisher's `recheck` (the subscription group: did the change counter move since the deciding sweep
//! read it? a registration in between saw the hooks still attached and asked for nothing) twice: before, so that
//! such a registration keeps the hooks (its process may already be at work, having seen them attached), and after,
//! for one that came while they went.
//!
//! Attaching again after the capability drop uses the program fd the agent holds (`BPF_RAW_TRACEPOINT_OPEN`,
//! which checks no capability once the program is loaded, from 5.19; before, the CAP_BPF the agent keeps for
//! reading its maps is enough). Whether it works is tried at start-up with an empty effective set
//! ([`Arming::check_unprivileged`]). Where a hook cannot work that way the plan knows it at start-up: in kprobe mode
//! (a kprobe is a perf event, and opening one needs CAP_PERFMON) and in fentry mode on a kernel where a detached
//! fentry program cannot attach again (5.10; [`super::attach::probe_reattach`]), a family with such a hook would run
//! it for every process for good, so it is off (`attach::not_on_demand`, reported `off` like an opt-in family)
//! unless [`KEEP_ATTACHED`] accepts that price. A group stays attached for good with that flag, where the attach
//! without privileges fails at start-up, on a kernel whose has-pinned flag the agent cannot read (the fork-copy
//! group), or with no subscriber inventory.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex, MutexGuard, Weak, mpsc},
    thread,
};

use aya::{
    maps::{Array, MapData},
    programs::ProgramFd,
};

pub use super::spec::OnDemand;

/// The flag that keeps every on-demand hook attached for good, and switches on the families whose on-demand hooks
/// cannot be attached on demand in their mode (`attach::not_on_demand`), at a price every process pays.
pub const KEEP_ATTACHED: &str = "--probes.keep-attached";

/// One program attached on demand, and its link while attached.
struct Program {
    name: String,
    fd: ProgramFd,
    link: Option<OwnedFd>,
}

/// The programs an attach pass made on demand, by group (see [`super::attach`]).
#[derive(Default)]
pub struct Collected {
    programs: BTreeMap<OnDemand, Vec<Program>>,
    /// Why some groups had to be attached for good (e.g. kprobes).
    always: BTreeMap<OnDemand, String>,
}

impl Collected {
    /// Attaches a loaded tracing program (fentry, fexit, tp_btf) of `group` by its fd and keeps the link.
    pub fn attach(&mut self, group: OnDemand, name: String, fd: ProgramFd) -> io::Result<()> {
        let link = raw_tracepoint_open(fd.as_fd())?;
        self.programs.entry(group).or_default().push(Program { name, fd, link: Some(link) });
        Ok(())
    }

    /// Forgets (and so detaches) the programs of a failed alternative.
    pub fn forget(&mut self, names: &[String]) {
        self.programs.values_mut().for_each(|g| g.retain(|p| !names.contains(&p.name)));
    }

    /// `group` has a hook that can only be attached for good (its attach pass attached it as usual).
    pub fn attached_for_good(&mut self, group: OnDemand, why: &str) {
        self.always.entry(group).or_insert_with(|| why.to_string());
    }
}

struct State {
    group: OnDemand,
    programs: Vec<Program>,
    /// What the programs read: the attach generation while attached, 0 while detached.
    flag: Option<Array<MapData, u32>>,
    /// `Some(why)`: attached for good.
    always: Option<String>,
    /// `Some(why)`: nothing of the group is attached, and nothing will be.
    none_attached: Option<String>,
    /// Attach/detach transitions since start-up.
    transitions: u64,
    /// The last attach generation written to `flag` (never 0).
    generation: u32,
}

/// Run before and after a wished-for detach: `Some(why)` when the group is needed after all, and is kept or attached
/// again.
pub type Recheck = Box<dyn Fn() -> Option<String> + Send>;

/// A switch a sweep asked for, done by the group's worker thread.
struct Wish {
    wanted: bool,
    why: String,
    recheck: Option<Recheck>,
}

/// One group of on-demand hooks: a cheap handle shared by the sweeper (which decides), the request reader and the
/// group's worker thread (which switches).
#[derive(Clone)]
pub struct Arming {
    group: OnDemand,
    /// Held while switching.
    state: Arc<Mutex<State>>,
    /// What [`Arming::view`] and [`Arming::on_demand`] read: written at the end of every change and never held
    /// while switching, so a request does not wait for a switch in progress.
    shown: Arc<Mutex<Shown>>,
    /// To the worker thread; `None`: nothing to switch, or no thread (then [`Arming::want`] switches in place).
    wishes: Option<mpsc::Sender<Wish>>,
}

#[derive(Clone, Default)]
struct Shown {
    view: ArmingView,
    on_demand: bool,
    /// Wishes sent to the worker and not yet fulfilled.
    pending: u64,
    /// Whether the latest of them is a detach (which shows at once).
    detach_wished: bool,
}

/// Every group of on-demand hooks.
#[derive(Clone)]
pub struct Armings {
    pub fork_copy: Arming,
    pub subscriptions: Arming,
}

impl Armings {
    /// Splits what the attach pass collected into its groups, each with the flag its programs read.
    pub fn new(
        mut collected: Collected,
        fork_copy_flag: Option<Array<MapData, u32>>,
        subscriptions_flag: Option<Array<MapData, u32>>,
    ) -> Self {
        let mut group = |g: OnDemand, flag| {
            let programs = collected.programs.remove(&g).unwrap_or_default();
            Arming::new(g, programs, collected.always.remove(&g), flag)
        };
        Self {
            fork_copy: group(OnDemand::WhilePinned, fork_copy_flag),
            subscriptions: group(OnDemand::WhileSubscribed, subscriptions_flag),
        }
    }

    /// The group of `on_demand` (`None` for [`OnDemand::Always`]).
    pub fn get(&self, on_demand: OnDemand) -> Option<&Arming> {
        match on_demand {
            OnDemand::Always => None,
            OnDemand::WhilePinned => Some(&self.fork_copy),
            OnDemand::WhileSubscribed => Some(&self.subscriptions),
        }
    }

    pub fn all(&self) -> [&Arming; 2] {
        [&self.fork_copy, &self.subscriptions]
    }

    /// Keeps every group attached for good, saying why once each.
    pub fn keep_attached(&self, why: &str) {
        self.all().iter().for_each(|a| a.keep_attached(why));
    }
}

/// What `/metrics` and the API say about one group of on-demand hooks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArmingView {
    /// Whether the group's hooks are attached now.
    pub attached: bool,
    /// Why they are attached for good, if they are.
    pub always: Option<String>,
    /// Why none of them is attached in this mode, if none is (nothing will switch).
    pub none_attached: Option<String>,
    pub transitions: u64,
    /// A switch is wished for or under way (then `transitions` has not counted it yet).
    pub switching: bool,
}

impl Arming {
    /// Takes one group's programs, attached at this point.
    fn new(group: OnDemand, programs: Vec<Program>, always: Option<String>, flag: Option<Array<MapData, u32>>) -> Self {
        // No program to switch and none attached for good: no family with such a hook attached in this mode (tracepoint
        // mode, a family off or denied). A waiter for the group (a test workload) must not wait for an attach that
        // cannot come, and the view must not say attached.
        let none_attached = (always.is_none() && programs.is_empty()).then(|| {
            "no hook of this group is attached in this mode: the families with one are off or not attached (see \
             `mmuscope check`)"
                .to_string()
        });
        let switched = !programs.is_empty();
        let mut state = State { group, programs, flag, always, none_attached, transitions: 0, generation: 1 };
        state.write_flag(true);
        let shown = Arc::new(Mutex::new(Shown::from(&state)));
        let state = Arc::new(Mutex::new(state));
        let wishes = switched.then(|| spawn_worker(group, Arc::downgrade(&state), shown.clone())).flatten();
        Self { group, state, shown, wishes }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn shown(&self) -> MutexGuard<'_, Shown> {
        self.shown.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes what `state` now holds what the group shows, `fulfilled` wishes fewer pending.
    fn publish(&self, state: &State, fulfilled: u64) {
        let mut shown = self.shown();
        let (pending, detach_wished) = (shown.pending.saturating_sub(fulfilled), shown.detach_wished);
        *shown = Shown { pending, detach_wished, ..Shown::from(state) };
        shown.view.switching = pending > 0;
        if pending > 0 && detach_wished && shown.on_demand {
            shown.view.attached = false;
        }
    }

    pub fn group(&self) -> OnDemand {
        self.group
    }

    /// The group as `check --json` shows it.
    pub fn report(&self) -> super::report::OnDemandReport {
        let s = self.lock();
        super::report::OnDemandReport { group: s.group.name(), switched: s.programs.len(), always: s.always.clone() }
    }

    /// Whether any hook is attached on demand (and not for good).
    pub fn on_demand(&self) -> bool {
        self.shown().on_demand
    }

    /// The group as of its last change: an attach in progress shows when it is done, a detach as soon as it is
    /// wished for.
    pub fn view(&self) -> ArmingView {
        self.shown().view.clone()
    }

    /// Keeps the hooks attached for good, saying why once.
    pub fn keep_attached(&self, why: &str) {
        let mut s = self.lock();
        if s.always.is_some() || s.programs.is_empty() {
            return;
        }
        if let Err(e) = s.set(true) {
            s.failed(&e);
        }
        tracing::info!(why, "{} attached for good", s.group.hooks());
        s.always = Some(why.to_string());
        self.publish(&s, 0);
    }

    /// Asks the group's worker thread to attach (`wanted`) or detach the hooks, and returns at once (see the module
    /// docs). Before and after a detach, `recheck` decides whether the hooks are needed after all.
    pub fn want(&self, wanted: bool, why: String, recheck: Option<Recheck>) {
        // A detach on its way already shows: a waiter for the hooks (a test workload registering a notifier) must not
        // take them for attached while they go, and a later attach shows once it is done.
        let wish = Wish { wanted, why, recheck };
        let Some(worker) = &self.wishes else { return self.fulfil(wish, 0) };
        // Counted before the worker can take it (it publishes through the same lock).
        let mut shown = self.shown();
        match worker.send(wish) {
            Ok(()) => {
                shown.pending += 1;
                shown.detach_wished = !wanted;
                shown.view.switching = true;
                if !wanted && shown.on_demand {
                    shown.view.attached = false;
                }
            }
            Err(mpsc::SendError(wish)) => {
                drop(shown);
                self.fulfil(wish, 0);
            }
        }
    }

    /// As [`Arming::want`], but switches before returning (start-up, where no request waits and the capability
    /// check that follows must find the group as the first sweep left it).
    pub fn switch_now(&self, wanted: bool, why: String, recheck: Option<Recheck>) {
        self.fulfil(Wish { wanted, why, recheck }, 0);
    }

    /// Does what `wish` asks; `taken`: the wishes of the worker's queue it stands for (the latest of them).
    fn fulfil(&self, wish: Wish, taken: u64) {
        let Wish { wanted, why, recheck } = wish;
        let needed = || recheck.as_ref().and_then(|recheck| recheck());
        if wanted {
            self.set(true, &why);
        } else if let Some(kept) = needed() {
            // The sweep's "none" is out of date: keep them (or attach them, if an earlier wish had them go).
            self.set(true, &kept);
        } else {
            self.set(false, &why);
            if let Some(again) = needed() {
                self.set(true, &again);
            }
        }
        if taken > 0 {
            self.publish(&self.lock(), taken);
        }
    }

    /// Attaches (`wanted`) or detaches the hooks now, unless they are attached for good. `why` goes to the log.
    pub fn set(&self, wanted: bool, why: &str) {
        let mut s = self.lock();
        // No programs: the families attached in no mode with such a hook (their plans say why), nothing to switch.
        let switch = s.always.is_none() && !s.programs.is_empty() && s.attached() != wanted;
        if switch {
            match s.set(wanted) {
                Ok(()) => tracing::info!(why, "{} {}", s.group.hooks(), if wanted { "attached" } else { "detached" }),
                Err(e) => s.failed(&e),
            }
        }
        // Also without a switch: a detach wished for and then overtaken showed as detached (`want`).
        self.publish(&s, 0);
    }

    /// Detaches and attaches again with `unprivileged` in force (the capability set the agent keeps after
    /// start-up); where that fails, attaches with the current privileges and keeps the hooks for good. Leaves them
    /// as they were otherwise.
    pub fn check_unprivileged(&self, unprivileged: impl FnOnce(&mut dyn FnMut() -> io::Result<()>) -> io::Result<()>) {
        let mut s = self.lock();
        if s.always.is_some() || s.programs.is_empty() {
            return;
        }
        let was = s.attached();
        let tried = unprivileged(&mut || {
            s.set(false)?;
            s.set(true)
        });
        if let Err(e) = tried {
            let why = format!("attaching it again without privileges fails on this kernel ({e})");
            match s.set(true) {
                Ok(()) => tracing::warn!(why, "{} attached for good", s.group.hooks()),
                Err(e) => s.failed(&e),
            }
            s.always = Some(why);
            self.publish(&s, 0);
            return;
        }
        if !was {
            let _ = s.set(false);
        }
        // The check is no transition anything on the host made happen.
        s.transitions = 0;
        self.publish(&s, 0);
    }
}

impl From<&State> for Shown {
    fn from(s: &State) -> Self {
        let view = ArmingView {
            attached: s.always.is_some() || s.attached(),
            always: s.always.clone(),
            none_attached: s.none_attached.clone(),
            transitions: s.transitions,
            switching: false,
        };
        Self { view, on_demand: s.always.is_none() && !s.programs.is_empty(), pending: 0, detach_wished: false }
    }
}

impl State {
    fn attached(&self) -> bool {
        self.programs.iter().any(|p| p.link.is_some())
    }

    fn failed(&self, e: &io::Error) {
        let lost = match self.group {
            OnDemand::WhilePinned => "fork copies are not counted",
            _ => "operations, TLB-gather and cause windows are not seen",
        };
        tracing::error!("attaching the {} failed: {e}; {lost}", self.group.hooks());
    }

    fn set(&mut self, wanted: bool) -> io::Result<()> {
        if wanted {
            for p in &mut self.programs {
                if p.link.is_none() {
                    let link = raw_tracepoint_open(p.fd.as_fd());
                    p.link = Some(link.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.name)))?);
                }
            }
            // A new generation: per-thread state left by the previous attach is stale.
            self.generation = self.generation.checked_add(1).unwrap_or(1);
            self.write_flag(true);
        } else {
            // The flag first: an event between the two then asks to attach rather than go unseen silently.
            self.write_flag(false);
            self.programs.iter_mut().for_each(|p| p.link = None);
        }
        self.transitions += 1;
        Ok(())
    }

    fn write_flag(&mut self, attached: bool) {
        let value = if attached { self.generation } else { 0 };
        if let Some(flag) = &mut self.flag
            && let Err(e) = flag.set(0, value, 0)
        {
            tracing::warn!("writing the {} flag: {e}", self.group.name());
        }
    }
}

/// The thread that switches `group` as wished; ends with the last handle. `None` if it cannot be started.
fn spawn_worker(group: OnDemand, state: Weak<Mutex<State>>, shown: Arc<Mutex<Shown>>) -> Option<mpsc::Sender<Wish>> {
    let (wishes, received) = mpsc::channel::<Wish>();
    let worker = move || {
        while let Ok(mut wish) = received.recv() {
            // Only the latest counts: a later sweep decided again.
            let mut taken = 1;
            while let Ok(later) = received.try_recv() {
                (wish, taken) = (later, taken + 1);
            }
            let Some(state) = state.upgrade() else { return };
            Arming { group, state, shown: shown.clone(), wishes: None }.fulfil(wish, taken);
        }
    };
    match thread::Builder::new().name(format!("arm-{}", group.name())).spawn(worker) {
        Ok(_) => Some(wishes),
        Err(e) => {
            tracing::warn!("no thread to switch the {} ({e}); sweeps switch them in place", group.hooks());
            None
        }
    }
}

/// Attaches the program by its fd, closes the link, and attaches it again: what detaching and attaching on demand
/// needs from the kernel.
pub fn attach_twice(fd: &ProgramFd) -> io::Result<()> {
    drop(raw_tracepoint_open(fd.as_fd())?);
    raw_tracepoint_open(fd.as_fd()).map(drop)
}

/// `bpf(BPF_RAW_TRACEPOINT_OPEN)` with no name: attaches a loaded tracing program (fentry, fexit, tp_btf) to the
/// target it was loaded for; the link lives as long as the returned fd.
fn raw_tracepoint_open(prog: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    /// `union bpf_attr`'s `raw_tracepoint` member: `name`, `prog_fd` (and, from 6.10, a cookie we leave at 0,
    /// which older kernels accept since the bytes past their own size are zero).
    #[repr(C)]
    struct RawTracepoint {
        name: u64,
        prog_fd: u32,
        _pad: u32,
        cookie: u64,
    }
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    let attr = RawTracepoint { name: 0, prog_fd: prog.as_raw_fd() as u32, _pad: 0, cookie: 0 };
    // SAFETY: bpf(2) reads `size_of::<RawTracepoint>()` bytes of `attr`, which outlives the call.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_RAW_TRACEPOINT_OPEN, &attr as *const RawTracepoint, size_of::<RawTracepoint>())
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_with_nothing_attached_says_so_and_never_switches() {
        let none = Arming::new(OnDemand::WhileSubscribed, Vec::new(), None, None);
        let v = none.view();
        assert!(!v.attached && v.always.is_none() && v.none_attached.is_some(), "{v:?}");
        none.set(true, "a registration");
        assert_eq!(none.view(), v, "nothing to attach");
        assert!(!none.on_demand());
        let kept = Arming::new(OnDemand::WhileSubscribed, Vec::new(), Some("kprobe mode".into()), None);
        let v = kept.view();
        assert!(v.attached && v.always.is_some() && v.none_attached.is_none(), "{v:?}");
    }

    /// A recheck that answers `answers` in turn and counts its calls.
    fn recheck(answers: &'static [bool]) -> (Recheck, Arc<std::sync::atomic::AtomicUsize>) {
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let recheck = Box::new(move || {
            let i = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answers[i].then(|| "a subscription changed during the sweep".to_string())
        });
        (recheck, calls)
    }

    #[test]
    fn a_detach_is_rechecked_before_and_after() {
        let group = Arming::new(OnDemand::WhileSubscribed, Vec::new(), None, None);
        // Changed before the detach: kept, so no second look.
        let (kept, calls) = recheck(&[true]);
        group.switch_now(false, "no process has notifier subscriptions".into(), Some(kept));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Unchanged before: detached, then looked at again.
        let (gone, calls) = recheck(&[false, true]);
        group.switch_now(false, "no process has notifier subscriptions".into(), Some(gone));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
        // An attach asks nothing.
        let (unused, calls) = recheck(&[]);
        group.switch_now(true, "a process has notifier subscriptions".into(), Some(unused));
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[test]
    fn what_a_group_shows_does_not_wait_for_a_switch_in_progress() {
        let kept = Arming::new(OnDemand::WhileSubscribed, Vec::new(), Some("kprobe mode".into()), None);
        let switching = kept.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = kept.clone();
        std::thread::spawn(move || tx.send((reader.view(), reader.on_demand(), reader.group())));
        let (view, on_demand, group) =
            rx.recv_timeout(std::time::Duration::from_secs(10)).expect("view() waited for the switching lock");
        assert!(view.attached && !on_demand && group == OnDemand::WhileSubscribed, "{view:?}");
        drop(switching);
    }
}
