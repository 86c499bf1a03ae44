//! What the kernel accounts for our own eBPF programs: run time and run count while BPF statistics are enabled, and
//! always the runs it skipped (`recursion_misses`, 5.12+).
//!
//! A trampoline (fentry/fexit, tp_btf) program that is already running on a CPU is skipped when it fires again there:
//! a nested hit, or, on a preemptible kernel, a task preempted inside the program and another task on the same CPU
//! reaching the same hook. Each skip is an event the agent did not count, so the counter is always read and exported:
//! an exact count is only exact while it stays 0 (seen in a 7.2 TCG guest, fentry mode, invalidations racing RDMA
//! faults: brackets lost, the skips counted here). Kprobe programs run with preemption off and count their own
//! nested misses there too.
//!
//! Run time and count are off unless `--bpf.run-stats` asks for them: while any `BPF_ENABLE_STATS` fd is open, the kernel reads the clock
//! twice around *every* eBPF program run on the host (~65 ns per run measured here, see BENCHMARKS.md), a cost paid
//! by other tools' programs too.
//!
//! Statistics are enabled through a scoped `BPF_ENABLE_STATS` file descriptor held for the agent's lifetime (the
//! kernel stops counting when the last such fd closes), never through the global `kernel.bpf_stats_enabled` sysctl;
//! enabling needs `CAP_SYS_ADMIN`, without it the families are left out and a warning says why.
//! The counters are read through duplicates of our own program fds (BPF_OBJ_GET_INFO_BY_FD), not by walking the
//! kernel's program ids: that walk needs `CAP_SYS_ADMIN` at every scrape, and the agent drops all capabilities
//! right after attaching (`privileges`).

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    time::Duration,
};

use aya::{Ebpf, programs::ProgramFd};

/// One program's counters.
#[derive(Clone, Debug, PartialEq)]
pub struct ProgramRun {
    pub program: String,
    /// Zero unless statistics are enabled ([`ProgramStats::enabled`]).
    pub run_time: Duration,
    /// Zero unless statistics are enabled.
    pub run_count: u64,
    /// Runs the kernel skipped because the program was already running on that CPU (0 before 5.12).
    pub recursion_misses: u64,
}

pub struct ProgramStats {
    /// Keeps the kernel's accounting on; closing it turns it off.
    _enabled: Option<OwnedFd>,
    /// Our name for each loaded program (the kernel keeps only 15 bytes of it) and a duplicate of its fd, sorted by
    /// name.
    programs: Vec<(String, ProgramFd)>,
}

impl ProgramStats {
    /// Keeps an fd of every program of `ebpf` that is loaded (= attached: programs that failed to attach were
    /// unloaded), and enables the run-time statistics if `run_stats`.
    pub fn new(ebpf: &Ebpf, run_stats: bool) -> Self {
        let enabled = run_stats.then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime)).and_then(|r| {
            r.inspect_err(|e| {
                tracing::warn!(
                    "BPF run-time statistics unavailable (BPF_ENABLE_STATS needs CAP_SYS_ADMIN, Linux 5.8+): {e}"
                )
            })
            .ok()
        });
        let mut programs: Vec<(String, ProgramFd)> =
            ebpf.programs().filter_map(|(name, p)| Some((name.to_string(), p.fd().ok()?.try_clone().ok()?))).collect();
        programs.sort_by(|a, b| a.0.cmp(&b.0));
        Self { _enabled: enabled, programs }
    }

    /// Whether run time is being accounted.
    pub fn enabled(&self) -> bool {
        self._enabled.is_some()
    }

    /// Current counters of our programs, sorted by name.
    pub fn read(&self) -> Vec<ProgramRun> {
        let mut out = Vec::new();
        for (name, fd) in &self.programs {
            match run_stats(fd.as_fd()) {
                Ok(mut run) => {
                    run.program = name.clone();
                    out.push(run);
                }
                Err(e) => tracing::debug!("reading BPF program info of {name}: {e}"),
            }
        }
        out
    }
}

/// Run time, count and recursion misses of the program behind `fd` (BPF_OBJ_GET_INFO_BY_FD), with an empty name.
/// aya 0.14 offers program info only through an `&Program` or the id walk, hence the raw call. Also the call
/// `privileges` uses to find out whether bpf(2) on our own fds works without capabilities.
pub fn run_stats(fd: BorrowedFd<'_>) -> io::Result<ProgramRun> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // Offsets in the stable uapi `struct bpf_prog_info` (fields are only ever appended).
    const RUN_TIME_NS: usize = 192;
    const RUN_CNT: usize = 200;
    /// 5.12+; an older kernel fills less of the buffer and leaves it 0.
    const RECURSION_MISSES: usize = 208;
    let mut info = [0u8; 232];
    let attr = InfoAttr { bpf_fd: fd.as_raw_fd() as u32, info_len: info.len() as u32, info: info.as_mut_ptr() as u64 };
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call; the kernel writes at most that much.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_OBJ_GET_INFO_BY_FD, &attr, size_of::<InfoAttr>()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let u64_at = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().expect("8 bytes"));
    Ok(ProgramRun {
        program: String::new(),
        run_time: Duration::from_nanos(u64_at(RUN_TIME_NS)),
        run_count: u64_at(RUN_CNT),
        recursion_misses: u64_at(RECURSION_MISSES),
    })
}
