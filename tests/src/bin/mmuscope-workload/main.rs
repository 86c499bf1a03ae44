//! `mmuscope-workload`: drives real kernel paths that fire mmu_notifier invalidations (and fork copies of pinned
//! pages) and prints exactly what it caused as one JSON object on stdout (schema: `mmuscope_tests::truth`).
//! Progress goes to stderr.
//!
//! Layout: `cli` (arguments), `scenarios/` (one file per scenario), `bench/` (timed modes for `cargo xtask bench`),
//! and the fixtures they share: `cgroups` (the fresh-cgroup step and `cleanup-cgroup`), `vm` (KVM VMs), `region`
//! (anonymous mappings and address-space holes), `thp` (PMD-mapped THPs via `AnonHugePages`), `pagemap`
//! (`/proc/self/pagemap`), `pin` (io_uring long-term pins), `forkreport` (fork with a PFN report from the child),
//! `swap` (swap areas, temporary zram), `kernel_api` (the secondary-TLB API from BTF), `sys` (small syscall helpers).
//! The ground-truth model and the cgroup fixture live in the library (`mmuscope_tests`), shared with the integration
//! tests.

mod agent;
mod bench;
mod cgroups;
mod cli;
mod forkreport;
mod hold;
mod kernel_api;
mod mirror;
mod pagemap;
mod pin;
mod region;
mod scenarios;
mod subscriber;
mod swap;
mod sys;
mod thp;
mod vm;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};
use scenarios as s;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmuscope-workload: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::AwaitHooksHelper = cli.command {
        return agent::hooks_helper(cli.await_hooks.as_deref());
    }
    // Before the scenario registers anything: the waits then touch no mapping of this mm.
    agent::start_hooks_helper(cli.await_hooks.as_deref())?;
    let truth = match cli.command {
        Command::KvmMadvise(a) => s::kvm_madvise::run(&a)?,
        Command::KvmMunmap(a) => s::kvm_munmap::run(&a)?,
        Command::KvmMprotect(a) => s::kvm_mprotect::run(&a)?,
        Command::ThpPartialMunmap(a) => s::thp_partial_munmap::run(&a)?,
        Command::MremapMove(a) => s::mremap_move::run(&a)?,
        Command::ThpSplit(a) => s::thp_split::run(&a)?,
        Command::ThpSwapOut(a) => s::thp_swap_out::run(&a)?,
        Command::ForkPinned(a) => s::fork_pinned::run(&a)?,
        Command::ForkPinnedThp(a) => s::fork_pinned_thp::run(&a)?,
        Command::ForkUnpinned(a) => s::fork_unpinned::run(&a)?,
        Command::ForkPinnedHugetlb(a) => s::fork_hugetlb::run(&a, true)?,
        Command::ForkUnpinnedHugetlb(a) => s::fork_hugetlb::run(&a, false)?,
        Command::CrossCgroup(a) => s::cross_cgroup::run(&a)?,
        Command::KsmMerge(a) => s::ksm_merge::run(&a)?,
        Command::MultiVm(a) => s::multi_vm::run(&a)?,
        Command::SwapOut(a) => s::swap_out::run(&a)?,
        Command::MirrorCollide(a) => s::mirror_collide::run(&a)?,
        Command::RdmaOdp(a) => s::rdma_odp::run(&a)?,
        Command::CrossCgroupInitiator(a) => return s::cross_cgroup::initiator(&a),
        Command::CleanupCgroup(a) => return cgroups::cleanup(&a),
        Command::AwaitHooksHelper => unreachable!("handled above"),
        Command::BenchMadvise(a) => return print_json(&bench::madvise::run(&a)?),
        Command::BenchFork(a) => return print_json(&bench::fork::run(&a)?),
        Command::BenchUnrelated(a) => return print_json(&bench::unrelated::run(&a)?),
    };
    // Only after the scenario finished (VMs destroyed): buffering and printing may allocate and free.
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", truth.to_json()).context("writing ground truth to stdout")?;
    out.flush().context("writing ground truth to stdout")
}

/// A benchmark's timings, one JSON line on stdout.
fn print_json(value: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{value}").context("writing timings to stdout")?;
    out.flush().context("writing timings to stdout")
}
