//! Command line: one subcommand per scenario, plus `cleanup-cgroup` for the harness.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "mmuscope-workload",
    version,
    about = "Drive mmu_notifier invalidations through real kernel paths and print the exact ground truth as JSON"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The agent under test's base URL (e.g. http://127.0.0.1:9476): after registering a notifier (a KVM VM, the
    /// test module's TLB subscriber or interval notifier), wait until its `/api/v1/subscribers` says the
    /// subscription hooks are attached (fentry mode attaches them only while some mm has subscriptions).
    #[arg(long, global = true, value_name = "URL")]
    pub await_hooks: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One KVM VM with a 2 MiB memslot; N × (madvise(MADV_DONTNEED) one page, touch it again).
    KvmMadvise(KvmMadviseArgs),
    /// One KVM VM; N × (mmap 16 KiB in a reserved hole, write it, munmap it): one UNMAP bracket each.
    KvmMunmap(KvmMunmapArgs),
    /// One KVM VM; N × (mprotect its 2 MiB memory read-only, then read-write, write a page): two PROTECTION_VMA.
    KvmMprotect(KvmMprotectArgs),
    /// One KVM VM; N PMD-mapped THPs, each loses its upper half to munmap: a split (CLEAR) and an UNMAP bracket.
    ThpPartialMunmap(ThpPartialMunmapArgs),
    /// N mremaps of 80 written pages across a PMD boundary: a range and a whole-mm flush in one bracket on 6.6+.
    MremapMove(MremapMoveArgs),
    /// One KVM VM; N PMD-mapped THPs, each split whole by split_huge_page through debugfs: two CLEAR brackets.
    ThpSplit(ThpSplitArgs),
    /// One KVM VM; N PMD-mapped THPs paged out whole (MADV_PAGEOUT): reclaim splits each PMD (needs swap or --zram-mib).
    ThpSwapOut(ThpSwapOutArgs),
    /// Private pages pinned with IORING_REGISTER_BUFFERS, then fork(): every pinned page is copied for the child.
    ForkPinned(ForkPagesArgs),
    /// A pinned 2 MiB PMD-mapped THP, then fork(): the PMD is split and all 512 pages are copied.
    ForkPinnedThp(ForkThpArgs),
    /// fork-pinned without the pin: nothing is copied.
    ForkUnpinned(ForkPagesArgs),
    /// Private anonymous hugetlb pages pinned with IORING_REGISTER_BUFFERS, then fork(): every one is copied.
    ForkPinnedHugetlb(ForkHugetlbArgs),
    /// fork-pinned-hugetlb without the pin: nothing is copied.
    ForkUnpinnedHugetlb(ForkHugetlbArgs),
    /// A process in another fresh cgroup collapses this process's KVM-registered memory with process_madvise.
    CrossCgroup(CrossCgroupArgs),
    /// The HMM mirror test module's interval notifier on a region; plain hits and misses, then rounds of a held
    /// invalidation with a waiting reader, a read retry and an hmm_range_fault -EBUSY (exact, counted by the module).
    MirrorCollide(MirrorCollideArgs),
    /// RDMA On-Demand Paging through soft-RoCE: an ODP memory region faulted in by RDMA WRITE/READ on a loopback RC
    /// QP pair, invalidated by madvise, mprotect and munmap between operations (needs rxe with ODP: 6.14+).
    RdmaOdp(RdmaOdpArgs),
    /// One KVM VM over N identical pages; ksmd merges them into one KSM page, then each is written (COW break).
    KsmMerge(KsmMergeArgs),
    /// Several KVM VMs on one mm; N × (MADV_DONTNEED one page, touch it): one bracket, one KVM call per VM.
    MultiVm(MultiVmArgs),
    /// MADV_PAGEOUT of KVM-registered memory to swap (needs an active swap area, or --zram-mib).
    SwapOut(SwapOutArgs),
    /// Internal: the other-cgroup side of `cross-cgroup` (started by it; talks over stdin/stdout).
    #[command(hide = true)]
    CrossCgroupInitiator(InitiatorArgs),
    /// Internal: waits on the agent for a scenario run with `--await-hooks` (started by it before it registers
    /// anything; one line on stdin per wait, one byte back).
    #[command(hide = true)]
    AwaitHooksHelper,
    /// Remove a scenario's cgroup from every hierarchy (the scenario leaves it behind for the scrape).
    CleanupCgroup(CleanupArgs),
    /// Benchmark: the kvm-madvise loop timed in-process; prints ns/op (for `cargo xtask bench`), no ground truth.
    BenchMadvise(BenchMadviseArgs),
    /// Benchmark: fork() of a process with M MiB pinned through io_uring, timed in-process; prints ns per fork.
    BenchFork(BenchForkArgs),
    /// Benchmark: a loop of a process with no notifier and no pinned page (syscall, fault, fork, mmap), timed.
    BenchUnrelated(BenchUnrelatedArgs),
}

#[derive(Debug, Args)]
pub struct BenchMadviseArgs {
    /// Timed madvise(MADV_DONTNEED)+touch rounds (after a warm-up of a tenth as many).
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
}

#[derive(Debug, Args)]
pub struct BenchForkArgs {
    /// MiB of private anonymous memory to write and pin.
    #[arg(long, value_name = "M", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub mib: u64,
    /// Timed forks.
    #[arg(long, value_name = "K", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub forks: u64,
    /// Do not pin the memory (pages shared copy-on-write).
    #[arg(long)]
    pub unpinned: bool,
}

#[derive(Debug, Args)]
pub struct BenchUnrelatedArgs {
    /// Which loop (see `bench::unrelated`).
    #[arg(long = "loop", value_name = "LOOP")]
    pub kind: UnrelatedLoop,
    /// Timed rounds (forks for `fork`), after a warm-up of a tenth as many (one fork).
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum UnrelatedLoop {
    /// getppid() through syscall(2).
    Syscall,
    /// madvise(MADV_DONTNEED) one page, write it (an anonymous fault).
    Fault,
    /// fork() of 256 MiB of written, unpinned memory.
    Fork,
    /// mmap one anonymous page, write it, munmap it.
    Mmap,
    /// One byte written to a page shared copy-on-write with a forked child (a copy-on-write fault).
    Cow,
}

#[derive(Debug, Args)]
pub struct MirrorCollideArgs {
    /// Rounds of (held invalidation + waiting reader + concurrent miss, read retry, hmm_range_fault -EBUSY).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub rounds: u64,
    /// Plain madvise(MADV_DONTNEED) calls on the mirrored interval.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub hits: u64,
    /// Plain madvise(MADV_DONTNEED) calls on another region of the same mm (brackets that miss the interval).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub misses: u64,
    /// The module to load (`cargo xtask vm` builds it per kernel and puts it there).
    #[arg(long, value_name = "PATH", default_value = "/usr/lib/mmuscope/mmuscope_mirror.ko")]
    pub module: std::path::PathBuf,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct RdmaOdpArgs {
    /// Rounds of (RDMA WRITE and READ of each window page, MADV_DONTNEED of one page, mprotect read-only and back).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub rounds: u64,
    /// The verbs helper (`cargo xtask vm` builds `tests/rdma/odp.c` and puts it there).
    #[arg(long, value_name = "PATH", default_value = "/usr/lib/mmuscope/mmuscope-rdma-odp")]
    pub helper: std::path::PathBuf,
    /// Invalidate R also while the RDMA operations run (a second thread of the helper); reader waits and
    /// `hmm_range_fault` -EBUSY then depend on timing and are counted by the guest check's trace reference.
    #[arg(long)]
    pub concurrent: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

/// Who subscribes to the scenario's mm (`crate::subscriber`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubscriberKind {
    /// One KVM VM with a memslot over the scenario's memory.
    Kvm,
    /// The test module's secondary-TLB subscriber: a notifier implementing only the kernel's secondary-TLB op.
    Sectlb,
}

#[derive(Debug, Args)]
pub struct SubscriberArgs {
    /// Who subscribes to the mm: a KVM VM, or the test module's secondary-TLB subscriber (see --module).
    #[arg(long, value_enum, default_value_t = SubscriberKind::Kvm)]
    pub subscriber: SubscriberKind,
    /// The test module for `--subscriber sectlb` (`cargo xtask vm` builds it per kernel and puts it there).
    #[arg(long, value_name = "PATH", default_value = "/usr/lib/mmuscope/mmuscope_mirror.ko")]
    pub module: std::path::PathBuf,
}

/// Where a scenario's fresh cgroup goes: `<parent>/<name>` in every hierarchy.
#[derive(Debug, Args)]
pub struct CgroupArgs {
    /// Cgroup directory name [default: <scenario>-<pid>].
    #[arg(long, value_name = "NAME")]
    pub cgroup_name: Option<String>,
    /// Parent cgroup path below each hierarchy's root; created if missing.
    #[arg(long, value_name = "PATH", default_value = "/mmuscope-test")]
    pub cgroup_parent: String,
    /// Stay in the cgroup this process was started in (e.g. `systemd-run --scope`'s or a service's) instead of
    /// creating a fresh one; the ground truth names that cgroup. Nothing else may run in it.
    #[arg(long, conflicts_with_all = ["cgroup_name", "cgroup_parent"])]
    pub cgroup_current: bool,
}

#[derive(Debug, Args)]
pub struct KvmMadviseArgs {
    /// madvise(MADV_DONTNEED)+touch rounds, each one invalidation bracket.
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
    /// Before tearing down, say so on stderr and wait until stdin is closed (the harness inspects the agent).
    #[arg(long)]
    pub hold: bool,
    /// Also register the test module's interval notifier (see --module) over the first N pages, beside the KVM VM:
    /// the rounds on those pages reach both subscribers, the others KVM alone.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub interval_pages: usize,
    /// Split those pages between K interval notifiers of the module (consecutive, one device open each), so that
    /// the subscriber inventory has several interval notifiers of one mm to list.
    #[arg(long, value_name = "K", default_value_t = 1, requires = "interval_pages")]
    pub intervals: usize,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct KvmMunmapArgs {
    /// mmap+munmap rounds, each one UNMAP bracket.
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
    /// Do not write the pages before unmapping them (the bracket count is the same).
    #[arg(long)]
    pub untouched: bool,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct KvmMprotectArgs {
    /// Read-only/read-write rounds, each two PROTECTION_VMA brackets.
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct ThpPartialMunmapArgs {
    /// THPs to build (before the VM) and half-unmap (with the VM), 2 MiB of memory each.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub iterations: u64,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct MremapMoveArgs {
    /// Ranges to build (before the subscriber) and move (with it), each in 4 MiB of its own plus a 4 MiB slot.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub iterations: u64,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct KsmMergeArgs {
    /// Identical pages to merge (one KSM page; ksmd's max_page_sharing defaults to 256) and then write.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u64).range(2..=128))]
    pub pages: u64,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct ThpSplitArgs {
    /// THPs to build (before the VM) and split (with the VM), 2 MiB of memory each.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub iterations: u64,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct ThpSwapOutArgs {
    /// THPs to build (before the VM) and page out (with the VM), 2 MiB of memory each.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=16))]
    pub thps: u64,
    /// If no swap is active, create a temporary zram swap device of this many MiB (needs the zram module) and
    /// remove it afterwards.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..=4096))]
    pub zram_mib: Option<u64>,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct ForkPagesArgs {
    /// Private anonymous 4 KiB pages in the region.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub pages: u64,
    /// Before tearing down, say so on stderr and wait until stdin is closed (the harness inspects the agent).
    #[arg(long)]
    pub hold: bool,
    /// Fork from a second thread moved into the sibling memory cgroup `<cgroup>-initiator` (cgroup v1 memory only):
    /// the copies must still count for the mm owner's cgroup, and nothing for the forking thread's.
    #[arg(long)]
    pub fork_from_sibling_memcg: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

/// The agent under test, for scenarios that must wait until it is ready to see them.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The agent's base URL (e.g. http://127.0.0.1:9476), for scenarios that must wait until the agent can see
    /// them: with pinned pages, fork only once its `/api/v1/subscribers` says the fork-copy hook is attached (the
    /// agent attaches it only while some mm has the has-pinned flag, and notices a new one at its next sweep); with
    /// an interval notifier (`mirror-collide`, `rdma-odp`), invalidate only once it times the notifier's callback (an agent
    /// run with `--probes.late-callbacks` attaches to a callback at the first sweep that meets it).
    #[arg(long, value_name = "URL")]
    pub agent_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct ForkHugetlbArgs {
    /// Huge pages (of the default size) in the region; reserved in `/proc/sys/vm/nr_hugepages` for the run.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub huge_pages: u64,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct ForkThpArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct CrossCgroupArgs {
    /// 2 MiB regions for the other process to collapse (one MMU_NOTIFY_CLEAR bracket each) or, where
    /// process_madvise has no MADV_COLLAPSE (before 6.1), 1 MiB regions to page out (one bracket per 4 KiB page).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub regions: u64,
    /// If the regions are paged out and no swap is active, create a temporary zram swap device of this many MiB
    /// (needs the zram module) and remove it afterwards.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..=4096))]
    pub zram_mib: Option<u64>,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct MultiVmArgs {
    /// madvise(MADV_DONTNEED)+touch rounds, each one bracket.
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
    /// VMs registered on the mm.
    #[arg(long, value_name = "K", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub vms: u32,
    /// Before tearing down, say so on stderr and wait until stdin is closed (the harness inspects the agent).
    #[arg(long)]
    pub hold: bool,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct SwapOutArgs {
    /// 4 KiB pages to page out.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub pages: u64,
    /// If no swap is active, create a temporary zram swap device of this many MiB (needs the zram module) and
    /// remove it afterwards.
    #[arg(long, value_name = "MIB", value_parser = clap::value_parser!(u64).range(16..=4096))]
    pub zram_mib: Option<u64>,
    #[command(flatten)]
    pub subscriber: SubscriberArgs,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

#[derive(Debug, Args)]
pub struct InitiatorArgs {
    /// The process whose memory to advise.
    #[arg(long, value_name = "PID")]
    pub target_pid: u32,
    /// `ADDR:LEN` ranges (hex address, decimal length), comma-separated.
    #[arg(long, value_name = "RANGES", value_parser = parse_ranges)]
    pub ranges: Ranges,
    /// The advice to give them.
    #[arg(long, value_enum)]
    pub advice: CrossAdvice,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
}

/// The `process_madvise` advice of `cross-cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CrossAdvice {
    /// `MADV_COLLAPSE` (6.1+): one bracket per 2 MiB region.
    Collapse,
    /// `MADV_PAGEOUT` (5.10+; anonymous pages need swap): one bracket per page reclaimed.
    Pageout,
}

/// Address ranges of another process, as `(address, length)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranges(pub Vec<(u64, u64)>);

impl Ranges {
    /// The command-line form `parse_ranges` reads back.
    pub fn to_arg(&self) -> String {
        self.0.iter().map(|(a, l)| format!("{a:#x}:{l}")).collect::<Vec<_>>().join(",")
    }
}

fn parse_ranges(s: &str) -> Result<Ranges, String> {
    let ranges = s
        .split(',')
        .map(|r| {
            let (a, l) = r.split_once(':').ok_or_else(|| format!("{r:?} is not ADDR:LEN"))?;
            let a = u64::from_str_radix(a.trim_start_matches("0x"), 16).map_err(|e| format!("address {a:?}: {e}"))?;
            let l: u64 = l.parse().map_err(|e| format!("length {l:?}: {e}"))?;
            if l == 0 {
                return Err(format!("empty range at {a:#x}"));
            }
            Ok((a, l))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Ranges(ranges))
}

fn parse_iterations(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// The cgroup path below the hierarchy roots, e.g. /mmuscope-test/kvm-madvise-1234.
    #[arg(long, value_name = "REL")]
    pub path: String,
    /// Also remove parents left empty (stops quietly at the first one still in use).
    #[arg(long)]
    pub prune_parents: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kvm_madvise_defaults_and_bounds() {
        let cli = Cli::try_parse_from(["w", "kvm-madvise", "--iterations", "5"]).unwrap();
        let Command::KvmMadvise(a) = cli.command else { panic!("wrong subcommand") };
        assert_eq!((a.iterations, a.cgroup.cgroup_parent.as_str()), (5, "/mmuscope-test"));
        assert!(a.cgroup.cgroup_name.is_none() && !a.cgroup.cgroup_current);
        let cli = Cli::try_parse_from(["w", "kvm-madvise", "--iterations", "5", "--cgroup-current"]).unwrap();
        let Command::KvmMadvise(a) = cli.command else { panic!("wrong subcommand") };
        assert!(a.cgroup.cgroup_current);
        assert!(
            Cli::try_parse_from(["w", "kvm-madvise", "--iterations", "5", "--cgroup-current", "--cgroup-name", "x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["w", "kvm-madvise", "--iterations", "0"]).is_err());
        assert!(Cli::try_parse_from(["w", "kvm-madvise"]).is_err());
    }

    #[test]
    fn scenario_defaults_and_bounds() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("w").chain(args.iter().copied()));
        let Command::ForkPinned(a) = parse(&["fork-pinned"]).unwrap().command else { panic!("fork-pinned") };
        assert_eq!(a.pages, 64);
        assert!(parse(&["fork-unpinned", "--pages", "0"]).is_err());
        let Command::MultiVm(a) = parse(&["multi-vm", "--iterations", "3"]).unwrap().command else {
            panic!("multi-vm")
        };
        assert_eq!((a.iterations, a.vms), (3, 2));
        assert!(parse(&["multi-vm", "--iterations", "3", "--vms", "0"]).is_err());
        let Command::ThpPartialMunmap(a) = parse(&["thp-partial-munmap"]).unwrap().command else { panic!("thp") };
        assert_eq!(a.iterations, 1);
        assert!(parse(&["thp-partial-munmap", "--iterations", "65"]).is_err());
        let Command::SwapOut(a) = parse(&["swap-out", "--zram-mib", "64"]).unwrap().command else { panic!("swap") };
        assert_eq!((a.pages, a.zram_mib), (64, Some(64)));
        let Command::KvmMunmap(a) = parse(&["kvm-munmap", "--iterations", "2", "--untouched"]).unwrap().command else {
            panic!("kvm-munmap")
        };
        assert!(a.untouched);
        assert!(parse(&["kvm-mprotect"]).is_err(), "--iterations is required");
        let Command::BenchFork(a) = parse(&["bench-fork"]).unwrap().command else { panic!("bench-fork") };
        assert_eq!((a.mib, a.forks, a.unpinned), (64, 5, false));
        assert!(parse(&["bench-madvise", "--iterations", "0"]).is_err());
        let Command::BenchUnrelated(a) =
            parse(&["bench-unrelated", "--loop", "fork", "--iterations", "3"]).unwrap().command
        else {
            panic!("bench-unrelated")
        };
        assert!(matches!((a.kind, a.iterations), (UnrelatedLoop::Fork, 3)));
        assert!(parse(&["bench-unrelated", "--loop", "sleep", "--iterations", "3"]).is_err());
    }

    #[test]
    fn ranges_round_trip() {
        let r = Ranges(vec![(0x7f00_0020_0000, 2 << 20), (0x1000, 4096)]);
        assert_eq!(parse_ranges(&r.to_arg()).unwrap(), r);
        assert!(parse_ranges("0x1000").is_err());
        assert!(parse_ranges("zz:4096").is_err());
        assert!(parse_ranges("0x1000:0").is_err());
    }
}
