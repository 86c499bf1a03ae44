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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One KVM VM with a 2 MiB memslot; N × (madvise(MADV_DONTNEED) one page, touch it again).
    KvmMadvise(KvmMadviseArgs),
    /// Remove a scenario's cgroup from every hierarchy (the scenario leaves it behind for the scrape).
    CleanupCgroup(CleanupArgs),
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
}

#[derive(Debug, Args)]
pub struct KvmMadviseArgs {
    /// madvise(MADV_DONTNEED)+touch rounds, each one invalidation bracket.
    #[arg(long, value_name = "N", value_parser = parse_iterations)]
    pub iterations: u64,
    #[command(flatten)]
    pub cgroup: CgroupArgs,
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
        assert!(a.cgroup.cgroup_name.is_none());
        assert!(Cli::try_parse_from(["w", "kvm-madvise", "--iterations", "0"]).is_err());
        assert!(Cli::try_parse_from(["w", "kvm-madvise"]).is_err());
    }
}
