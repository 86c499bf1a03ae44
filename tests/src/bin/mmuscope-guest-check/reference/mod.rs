//! Observers that share no code with the agent or the workload: the kernel's own kprobe machinery (tracefs).
//!
//! 1. [`KprobeCounter`]: hit counters (`kprobe_profile`) on KVM's callbacks `kvm_mmu_notifier_invalidate_range_start`
//!    and, before 6.6, `kvm_mmu_notifier_invalidate_range` (KVM implements no secondary-TLB callback from 6.6).
//!    KVM's callbacks run only while a VM is registered, once per VM per bracket or secondary-TLB call, and in the
//!    guest only the workload has VMs. So the start callback's hits must equal the truth's brackets × VMs, and the
//!    secondary-TLB callback's hits the agent's secondary-TLB increase for the owner × VMs.
//! 2. [`BracketTrace`]: a kprobe trace of the generic `__mmu_notifier_invalidate_range_start/_end` (with the
//!    range's `event`), the secondary-TLB entry point, its implementers and the TLB-gather window, replayed in time
//!    order to count brackets by event value and secondary-TLB calls by context. The fetch args' offsets come from
//!    the running kernel's BTF through the tests' own reader (`btf.rs`), not the agent's. Unfiltered, the generic
//!    entries would not match: they also run for an mm whose last subscriber left (`mm->notifier_subscriptions`
//!    stays allocated), e.g. the workload's munmaps and exit after its VM is gone, which reach nobody and which the
//!    agent rightly skips. The trace keeps a bracket exactly when the kernel's own walk would find a subscriber
//!    (rule and contexts at [`BracketTrace`]).
//!
//! `cargo xtask test --tier vm` runs both around every scenario, on every kernel and mode of the matrix. They replace
//! the bpftrace scripts `tests/scripts/verify-scenario.sh` and `verify-kvm-madvise.sh`, which no tier ran: their
//! `kvm:kvm_unmap_hva_range` count per pid is KVM's start-callback count here (one per bracket per VM, the same
//! event), and their fork-time page-allocation count was only printed, never compared (the fork families' truth comes
//! from PFN comparison).
//!
//! Both add kprobes through tracefs ([`tracefs`], [`append`]) and remove them on drop.

mod kprobe_counter;
mod replay;
mod trace;

pub use kprobe_counter::{KVM_SECONDARY, KVM_START, KprobeCounter, kvm_callbacks};
pub use replay::Traced;
pub use trace::{BracketTrace, Layout};

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

/// The tracefs mount point, from `/proc/mounts`.
fn tracefs() -> Result<PathBuf> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    match mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "tracefs").then(|| PathBuf::from(dir))
    }) {
        Some(dir) => Ok(dir),
        None => bail!("tracefs is not mounted; the kprobe reference needs it"),
    }
}

/// `kprobe_events` takes one command per write without truncating the others (`>>` in a shell).
fn append(path: &std::path::Path, line: &str) -> Result<()> {
    use std::io::Write;
    let mut file =
        fs::OpenOptions::new().append(true).open(path).with_context(|| format!("opening {}", path.display()))?;
    file.write_all(line.as_bytes()).with_context(|| format!("writing {line:?} to {}", path.display()))
}
