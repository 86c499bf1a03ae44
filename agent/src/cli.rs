//! Command-line interface. Flags follow the Prometheus exporter conventions
//! (`--web.listen-address`, `--web.telemetry-path`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::probes::Mode;

#[derive(Parser, Debug)]
#[command(
    name = "mmuscope",
    version = crate::version::SHORT,
    long_version = crate::version::LONG,
    args_conflicts_with_subcommands = true,
    about = "Secondary-MMU invalidation metrics (mmu_notifier) per cgroup, via eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of `run`, the default command.
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Attach the probes and serve metrics (the default).
    Run(RunArgs),
    /// Show the probe plan for this kernel: what attaches, in which mode, and why not.
    Check(CheckArgs),
    /// Live terminal view of the busiest cgroups, read from an agent's HTTP API (local or remote).
    Top(crate::client::TopArgs),
    /// Print an agent's API view once: status and cgroups (table, or JSON with --json).
    Snapshot(crate::client::SnapshotArgs),
    /// Capture kernel stacks of invalidations from an agent for a few seconds: folded stacks, an SVG flame graph or
    /// JSON.
    Stacks(crate::client::StacksArgs),
    /// Print the metrics reference (Markdown) made from the metric families; `cargo xtask docs` writes it to
    /// docs/metrics.md.
    #[command(hide = true)]
    MetricsReference,
    /// Write the man pages and the bash, zsh and fish completions, generated from this command line, into DIR;
    /// `cargo xtask docs` writes them to deploy/man and deploy/completions.
    #[command(hide = true)]
    Generate {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct KernelArgs {
    /// Kernel BTF to read struct layouts and prototypes from.
    #[arg(long, value_name = "PATH", default_value = crate::kernel::KernelBtf::DEFAULT_PATH)]
    pub btf: PathBuf,
    /// Only use attach alternatives of this mode.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// max_entries of each aggregation map (cgroup × event keys).
    #[arg(long = "map.stats-entries", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(16..=1_048_576))]
    pub stats_map_entries: u32,
    /// Brackets at least this long are kept, with pid, cause and range, for /api/v1/slow (fentry and kprobe modes;
    /// e.g. 100us, 1ms; 0s keeps every bracket).
    #[arg(long = "slow.min-duration", value_name = "DURATION", default_value = "1ms", value_parser = crate::cgroups::parse_duration)]
    pub slow_min_duration: std::time::Duration,
    /// Hide a kernel function, `struct.member`, enumerator or tracepoint from the probe planner, or switch off a
    /// probe family by name, as if this kernel lacked it (repeat or comma-separate; for testing degradation).
    #[arg(long = "probes.deny", value_name = "NAME", value_delimiter = ',')]
    pub deny: Vec<String>,
    /// Name the copy on write of a KSM page (a write that breaks its sharing) cause="ksm_cow" instead of
    /// page_fault (fentry and kprobe modes). Off by default: its programs then run on every copy-on-write fault of
    /// every process on the host (docs/probes.md).
    #[arg(long = "probes.ksm-cow")]
    pub probes_ksm_cow: bool,
    /// Time subscriber callbacks first met after start-up (a KVM, GPU or RDMA module loaded later, a driver's first
    /// user) without a restart. The price: the agent keeps CAP_PERFMON (and CAP_SYS_ADMIN where
    /// kernel.perf_event_paranoid is 3, Debian's default) in its permitted set for its whole life, raised only while
    /// attaching a kprobe; by default it drops every capability after start-up and times only the callbacks known
    /// then. `check` accepts it and plans the same (the callback timers attach only in `run`).
    #[arg(long = "probes.late-callbacks")]
    pub probes_late_callbacks: bool,
    /// Keep the hooks attached on demand attached all the time: the fork-copy family's per-page hook (by default
    /// attached only while some process has pinned pages) and the operation, TLB-gather and cause windows (only while
    /// some mm has notifier subscriptions), which every page fault, unmap, mmap/munmap/madvise/fork system call and
    /// exit on the host runs. Where they cannot be attached on demand (kprobe mode; fentry mode on 5.10) their
    /// families (fork_copies, overlapping_brackets, secondary_tlb, causes) are off by default and this flag switches
    /// them on. The price: their programs run for every process on the host, a kprobe trap per call in kprobe mode
    /// (docs/probes.md, BENCHMARKS.md).
    #[arg(long = "probes.keep-attached")]
    pub probes_keep_attached: bool,
}

impl KernelArgs {
    /// The flags given that switch on a family off by default (`probes::Options::opt_in`).
    pub fn opt_in(&self) -> Vec<&'static str> {
        self.probes_ksm_cow.then_some(crate::probes::families::ksm_cow::FLAG).into_iter().collect()
    }

    /// The kernel as the planner sees it, `--probes.deny` applied.
    pub fn probe(&self) -> anyhow::Result<crate::kernel::KernelInfo> {
        let deny = crate::kernel::Deny::new(self.deny.iter().cloned());
        crate::kernel::KernelInfo::probe_with(&self.btf, deny, &crate::probes::families::kallsyms_functions())
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Address to serve HTTP on; repeat for several.
    #[arg(long = "web.listen-address", value_name = "HOST:PORT", default_values_t = [SocketAddr::from(([0, 0, 0, 0], 9476))])]
    pub listen: Vec<SocketAddr>,
    /// Path under which to expose metrics.
    #[arg(long = "web.telemetry-path", default_value = "/metrics", value_parser = telemetry_path)]
    pub telemetry_path: String,
    /// Web configuration in the Prometheus exporter-toolkit format (TLS, client CA, basic auth with bcrypt hashes);
    /// re-read when it or the files it names change.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config: Option<PathBuf>,
    #[command(flatten)]
    pub access: AccessArgs,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
    #[command(flatten)]
    pub cgroups: CgroupArgs,
    /// Exit with status 3 at start-up, naming the family and why, when a required probe family attaches nothing.
    /// Without it the agent serves what did attach and is ready anyway (loose attachment); the missing family shows
    /// in `mmuscope_probe_attached`, `check`, `/api/v1/status` and the log.
    #[arg(long = "probes.strict")]
    pub probes_strict: bool,
    /// Pin the counter maps in this bpffs directory (e.g. /sys/fs/bpf/mmuscope) so that counters continue across
    /// restarts; unset, nothing is pinned and nothing outlives the agent.
    #[arg(long = "pin", value_name = "DIR")]
    pub pin: Option<PathBuf>,
    /// Account the run time of the agent's eBPF programs (BPF_ENABLE_STATS, needs CAP_SYS_ADMIN) for
    /// mmuscope_bpf_program_run_seconds_total and _runs_total. Off by default: while it is on, every eBPF program on
    /// the host, not only ours, pays two clock reads per run.
    #[arg(long = "bpf.run-stats")]
    pub bpf_run_stats: bool,
    /// Switch the on-demand stack capture off: /api/v1/stacks and `mmuscope stacks` answer 404, and the programs are
    /// loaded without it (the verifier drops it), instead of carrying an idle check of one load and a branch.
    #[arg(long = "stacks.disable")]
    pub stacks_disable: bool,
    /// TOML file with values for these flags (keys are the long flag names, e.g. `[web] listen-address = [...]`);
    /// flags on the command line win. Documented default: /etc/mmuscope/mmuscope.toml.
    #[arg(long = "config.file", value_name = "PATH")]
    pub config_file: Option<PathBuf>,
}

/// Who may see what over HTTP, beyond the web config file. Both change on SIGHUP without a restart.
#[derive(Args, Debug, Clone, Default)]
pub struct AccessArgs {
    /// Answer 403 on /api/v1/subscribers and /api/v1/slow, which show the workloads' pids, process names and
    /// cgroups to anyone who may use the API.
    #[arg(long = "web.disable-process-details")]
    pub disable_process_details: bool,
    /// Require the web config's basic-auth credentials on /healthz and /readyz too (by default they answer without,
    /// so that kubelet and load-balancer probes work).
    #[arg(long = "web.health-requires-auth")]
    pub health_requires_auth: bool,
}

/// Cgroup labels and cardinality.
#[derive(Args, Debug, Clone)]
pub struct CgroupArgs {
    /// Cgroups with their own series; the rest are aggregated into cgroup="other" (0: no limit).
    #[arg(long = "max-cgroups", value_name = "N", default_value_t = crate::cgroups::DEFAULT_MAX_CGROUPS)]
    pub max_cgroups: usize,
    /// How long the series of a deleted cgroup stay after the deletion is noticed (e.g. 30s, 5m).
    #[arg(long = "cgroups.deleted-ttl", value_name = "DURATION", default_value = "5m", value_parser = crate::cgroups::parse_duration)]
    pub deleted_ttl: std::time::Duration,
    /// Where the node's filesystem is, to read pod and container names from /var/log/pods, /var/log/containers and
    /// /var/lib/kubelet/pods (e.g. /host in a DaemonSet).
    #[arg(long = "kubernetes.host-root", value_name = "PATH", default_value = "/")]
    pub kubernetes_host_root: PathBuf,
}

impl CgroupArgs {
    pub fn policy(&self) -> crate::cgroups::Policy {
        crate::cgroups::Policy {
            max_cgroups: (self.max_cgroups > 0).then_some(self.max_cgroups),
            deleted_ttl: self.deleted_ttl,
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Exit 3 unless every family attached with its best alternative (within --mode).
    #[arg(long)]
    pub strict: bool,
    #[command(flatten)]
    pub log: crate::logging::LogArgs,
}

fn telemetry_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.len() < 2 {
        return Err("must start with '/' and name a path, e.g. /metrics".into());
    }
    if ["/healthz", "/readyz"].contains(&s) {
        return Err(format!("{s} is reserved"));
    }
    Ok(s.to_string())
}
