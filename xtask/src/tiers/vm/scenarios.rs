//! Which scenarios a kernel of the matrix runs: those [`matrix`](super::matrix) lists for it (or
//! `MMUSCOPE_VM_SCENARIOS`) that the workload binary offers, less those whose test module or RDMA user space cannot
//! be made here (said, and a failure in CI).

use std::{env, path::PathBuf, process::Command, time::Duration};

use anyhow::{Result, bail};

use super::{
    MIRROR_MODULE,
    matrix::{FULL, KERNELS, MODULE},
    say,
};
use crate::{
    vm::{self, initramfs::GuestFile, kernels::CachedKernel},
    workspace::Workspace,
};

/// The test modules and tools the scenarios of `kernel` need: the HMM mirror module built for it (`vm::kmod`) for
/// the `mirror-*` scenarios, at [`MIRROR_MODULE`] in the guest; the verbs helper and rdma-core's user space
/// (`vm::rdma`) for `rdma-*`. Scenarios whose files cannot be made here are left out, said on the progress output
/// and in each run's notes.
pub(super) fn module_files(
    ws: &Workspace,
    kernel: &CachedKernel,
    scenarios: &mut Vec<String>,
) -> (Vec<GuestFile>, Vec<String>) {
    let (mut files, mut notes) = (Vec::new(), Vec::new());
    let mut leave_out = |scenarios: &mut Vec<String>, needs: fn(&str) -> bool, what: &str| {
        let left_out: Vec<String> = scenarios.iter().filter(|s| needs(s)).cloned().collect();
        scenarios.retain(|s| !needs(s));
        let note = format!("{what}; left out: {}", left_out.join("; "));
        say(format!("SKIPPED {note}"));
        notes.push(note);
    };
    if scenarios.iter().any(|s| needs_mirror(s)) {
        match vm::kmod::build(ws, kernel, vm::kmod::MIRROR) {
            Ok(ko) => files.push(GuestFile { host: ko, guest: PathBuf::from(MIRROR_MODULE) }),
            Err(why) => leave_out(
                scenarios,
                needs_mirror,
                &format!(
                    "test module (HMM mirror, secondary-TLB subscriber) not built for {}: {why}",
                    kernel.meta.release
                ),
            ),
        }
    }
    if scenarios.iter().any(|s| needs_rdma(s)) {
        match vm::rdma::guest_files(ws) {
            Ok(f) => files.extend(f),
            Err(why) => leave_out(scenarios, needs_rdma, &format!("rdma-core user space for the guest: {why:#}")),
        }
    }
    (files, notes)
}

/// Whether a scenario command line drives RDMA verbs (soft-RoCE in the guest).
fn needs_rdma(scenario: &str) -> bool {
    scenario.split_whitespace().next().is_some_and(|name| name.starts_with("rdma-"))
}

/// Whether a scenario command line drives the test module (the HMM mirror or the secondary-TLB subscriber).
fn needs_mirror(scenario: &str) -> bool {
    scenario.split_whitespace().next().is_some_and(|name| name.starts_with("mirror-"))
        || scenario.contains("--subscriber sectlb")
        || scenario.contains("--interval-pages")
}

/// The workload's subcommands.
pub(super) fn offered_scenarios(workload: &std::path::Path) -> Result<Vec<String>> {
    let help = vm::exec::output(Command::new(workload).arg("--help"), Duration::from_secs(60))?;
    Ok(subcommands(&String::from_utf8_lossy(&help.stdout)))
}

/// The scenarios of kernel `name` in [`KERNELS`] ([`FULL`] and [`MODULE`] for a kernel not listed there), or
/// `MMUSCOPE_VM_SCENARIOS`, that the workload binary offers, and those it does not (left out here;
/// a failure of the tier in CI).
pub(super) fn scenarios_for(name: &str, offered: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let (listed, extra) = KERNELS.iter().find(|(k, ..)| *k == name).map_or((FULL, MODULE), |(_, _, s, e)| (*s, *e));
    let listed = listed.iter().chain(extra);
    let wanted = list_from_env("MMUSCOPE_VM_SCENARIOS", ';').unwrap_or_else(|| listed.map(|s| s.to_string()).collect());
    let (available, missing): (Vec<String>, Vec<String>) = wanted
        .into_iter()
        .partition(|s| s.split_whitespace().next().is_some_and(|name| offered.iter().any(|o| o == name)));
    if !missing.is_empty() {
        say(format!("the workload does not offer these scenarios yet, left out: {}", missing.join("; ")));
    }
    if available.is_empty() {
        bail!("none of the scenarios is offered by the workload (it lists {offered:?})");
    }
    Ok((available, missing))
}

/// Subcommand names from clap's `--help` (`Commands:` section).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

pub(super) fn list_from_env(var: &str, sep: char) -> Option<Vec<String>> {
    let value = env::var(var).ok()?;
    let items: Vec<String> = value.split(sep).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::{
        super::matrix::{MIRROR, RDMA, SECTLB, SUBSCRIBER_SPLIT},
        *,
    };

    #[test]
    fn clap_subcommands() {
        let help = "Drive …\n\nUsage: w <COMMAND>\n\nCommands:\n  kvm-madvise     One KVM VM\n  \
                    cleanup-cgroup  Remove\n  help            Print this\n\nOptions:\n  -h, --help  Print help\n";
        assert_eq!(subcommands(help), ["kvm-madvise", "cleanup-cgroup", "help"]);
    }

    #[test]
    fn scenarios_that_need_the_test_module() {
        assert!(needs_mirror(MIRROR[0]));
        assert!(SECTLB.iter().all(|s| needs_mirror(s)) && needs_mirror(SUBSCRIBER_SPLIT));
        assert!(!needs_mirror("kvm-madvise --iterations 200"));
        assert!(!needs_mirror("kvm-madvise --iterations 200 --subscriber kvm"));
    }

    #[test]
    fn rdma_scenarios_run_where_rxe_has_odp() {
        assert!(RDMA.iter().all(|s| needs_rdma(s) && !needs_mirror(s)));
        assert!(!needs_rdma(MIRROR[0]));
        // rxe's ODP came in 6.14: of the matrix, only sid lists the RDMA scenarios.
        let offered: Vec<String> = RDMA.iter().map(|s| s.split_whitespace().next().unwrap().to_string()).collect();
        for (kernel, ..) in KERNELS {
            let runs = scenarios_for(kernel, &offered).is_ok_and(|(s, _)| s.iter().any(|s| needs_rdma(s)));
            assert_eq!(runs, *kernel == "sid", "{kernel}");
        }
    }
}
