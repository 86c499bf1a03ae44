//! Hot-path hooks attached only while something can be seen.
//!
//! The fork-copy family's per-copy hook (`fork_copy_*` on the anon-rmap call, `fork_page_alloc` on
//! `mm_page_alloc`) runs on every anonymous fault or page allocation of every process, and only an mm with the
//! has-pinned flag (`MMF_HAS_PINNED`, 5.9–5.12 `mm->has_pinned`) can make it count: no other fork copies eagerly.
//! Even its early exit is a program run per fault, which processes with nothing to report should not pay. So the
//! hook is attached while the subscriber inventory sees a flagged mm, and detached when it sees none
//! ([`ProgramSpec::while_pinned`](super::spec::ProgramSpec::while_pinned) marks it in the table).
//!
//! Between a process's first pin and the next sweep the hook may be detached. A fork in that window is seen by
//! `task_newtask` (once per fork): it counts the fork as unobserved (`mmuscope_fork_unobserved_total`) and asks
//! through a ring buffer to attach at once (its reader is started by `service.rs`).
//!
//! Attaching again after the capability drop uses the program fd the agent holds (`BPF_RAW_TRACEPOINT_OPEN`,
//! which checks no capability once the program is loaded, from 5.19; before, the CAP_BPF the agent keeps for
//! reading its maps is enough). Whether it works is tried at start-up with an empty effective set
//! ([`Arming::check_unprivileged`]). The hook stays attached for good where it cannot work that way: kprobe mode
//! (a kprobe is a perf event, and opening one needs CAP_PERFMON), fentry mode on a kernel where a detached fentry
//! program cannot attach again (5.10; [`super::attach::probe_reattach`]), a kernel whose has-pinned flag the agent
//! cannot read, no subscriber inventory, or `--probes.keep-attached`.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    maps::{Array, MapData},
    programs::ProgramFd,
};

/// One program attached on demand, and its link while attached.
struct OnDemand {
    name: String,
    fd: ProgramFd,
    link: Option<OwnedFd>,
}

/// The programs an attach pass made on demand (see [`super::attach`]).
#[derive(Default)]
pub struct Collected {
    programs: Vec<OnDemand>,
    /// Why some of them had to be attached for good (e.g. kprobes).
    pub always: Option<String>,
}

impl Collected {
    /// Attaches a loaded tracing program (fentry, fexit, tp_btf) by its fd and keeps the link.
    pub fn attach(&mut self, name: String, fd: ProgramFd) -> io::Result<()> {
        let link = raw_tracepoint_open(fd.as_fd())?;
        self.programs.push(OnDemand { name, fd, link: Some(link) });
        Ok(())
    }

    /// Forgets (and so detaches) the programs of a failed alternative.
    pub fn forget(&mut self, names: &[String]) {
        self.programs.retain(|p| !names.contains(&p.name));
    }
}

struct State {
    programs: Vec<OnDemand>,
    /// What the programs read: 1 while attached.
    flag: Option<Array<MapData, u32>>,
    /// `Some(why)`: attached for good.
    always: Option<String>,
    /// Attach/detach transitions since start-up.
    transitions: u64,
}

/// The on-demand hooks: a cheap handle shared by the sweeper (which decides) and the request reader.
#[derive(Clone)]
pub struct Arming {
    state: Arc<Mutex<State>>,
}

/// What `/metrics` and the API say about the on-demand hooks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ArmingView {
    /// Whether the per-copy hook is attached now.
    pub attached: bool,
    /// Why it is attached for good, if it is.
    pub always: Option<String>,
    pub transitions: u64,
}

impl Arming {
    /// Takes what the attach pass collected; the hooks are attached at this point.
    pub fn new(collected: Collected, flag: Option<Array<MapData, u32>>) -> Self {
        let mut state = State { programs: collected.programs, flag, always: collected.always, transitions: 0 };
        state.write_flag(true);
        Self { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether any hook is attached on demand (and not for good).
    pub fn on_demand(&self) -> bool {
        let s = self.lock();
        s.always.is_none() && !s.programs.is_empty()
    }

    pub fn view(&self) -> ArmingView {
        let s = self.lock();
        ArmingView {
            attached: s.always.is_some() || s.attached(),
            always: s.always.clone(),
            transitions: s.transitions,
        }
    }

    /// Keeps the hooks attached for good, saying why once.
    pub fn keep_attached(&self, why: &str) {
        let mut s = self.lock();
        if s.always.is_some() || s.programs.is_empty() {
            return;
        }
        if let Err(e) = s.set(true) {
            tracing::error!("attaching the fork-copy hook failed: {e}; fork copies are not counted");
        }
        tracing::info!(why, "fork-copy hook attached for good");
        s.always = Some(why.to_string());
    }

    /// Attaches (`wanted`) or detaches the hooks, unless they are attached for good. `why` goes to the log.
    pub fn set(&self, wanted: bool, why: &str) {
        let mut s = self.lock();
        // No programs: the family attached in no mode with such a hook (its plan says why), nothing to switch.
        if s.always.is_some() || s.programs.is_empty() || s.attached() == wanted {
            return;
        }
        match s.set(wanted) {
            Ok(()) => tracing::info!(why, "fork-copy hook {}", if wanted { "attached" } else { "detached" }),
            Err(e) => tracing::error!(why, "attaching the fork-copy hook failed: {e}; fork copies are not counted"),
        }
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
                Ok(()) => tracing::warn!(why, "fork-copy hook attached for good"),
                Err(e) => tracing::error!("attaching the fork-copy hook failed: {e}; fork copies are not counted"),
            }
            s.always = Some(why);
            return;
        }
        if !was {
            let _ = s.set(false);
        }
        // The check is no transition anything on the host made happen.
        s.transitions = 0;
    }
}

impl State {
    fn attached(&self) -> bool {
        self.programs.iter().any(|p| p.link.is_some())
    }

    fn set(&mut self, wanted: bool) -> io::Result<()> {
        if wanted {
            for p in &mut self.programs {
                if p.link.is_none() {
                    let link = raw_tracepoint_open(p.fd.as_fd());
                    p.link = Some(link.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.name)))?);
                }
            }
            self.write_flag(true);
        } else {
            // The flag first: a fork between the two then asks to attach rather than go uncounted silently.
            self.write_flag(false);
            self.programs.iter_mut().for_each(|p| p.link = None);
        }
        self.transitions += 1;
        Ok(())
    }

    fn write_flag(&mut self, attached: bool) {
        if let Some(flag) = &mut self.flag
            && let Err(e) = flag.set(0, u32::from(attached), 0)
        {
            tracing::warn!("writing {}: {e}", mmuscope_abi::names::FORK_COPIES_ARMED);
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
