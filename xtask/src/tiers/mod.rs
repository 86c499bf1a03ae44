//! The test tiers, as one table in the order `cargo xtask test` runs them. A new tier (the QEMU
//! kernel matrix, the ecosystem checks) is a module with a `run` function plus one row in
//! `TIERS`; its package groups are set up before any tier runs.

mod eco;
mod fleet;
mod host;
mod lint;
mod prerequisites;
pub mod release;
mod ship;
pub mod summary;
mod unit;
pub(crate) mod vm;

use std::process::Command;

use anyhow::{Result, bail};
use clap::builder::{PossibleValue, PossibleValuesParser};

use crate::{process, setup::Group, workspace::Workspace};

pub struct Tier {
    pub name: &'static str,
    pub about: &'static str,
    /// Package groups it needs.
    pub groups: &'static [Group],
    /// Whether it needs `cargo build --workspace` (debug) to have succeeded first.
    pub needs_build: bool,
    /// Whether it runs the agent's release build ([`release::ReleaseAgent`]).
    pub needs_release_agent: bool,
    /// Whether its tests mostly wait (agents starting, workloads, sleeps) and compile little: the release build runs
    /// in the background beside the first such tier ([`release`]).
    pub idle_cpu: bool,
    pub run: fn(&Context) -> Result<Outcome>,
}

pub const TIERS: &[Tier] = &[
    Tier {
        name: "lint",
        about: "rustfmt and clippy (-D warnings) for the workspace and the eBPF crate",
        groups: &[Group::EbpfBuild, Group::EbpfLint],
        needs_build: false,
        needs_release_agent: false,
        idle_cpu: false,
        run: lint::run,
    },
    Tier {
        name: "unit",
        about: "cargo test for everything except the root-only `host` test target",
        groups: &[Group::EbpfBuild],
        needs_build: false,
        needs_release_agent: false,
        idle_cpu: false,
        run: unit::run,
    },
    Tier {
        name: "host",
        about: "agent + workload on this machine's kernel (root, /dev/kvm, BTF); benchmark harness smoke",
        groups: &[Group::EbpfBuild, Group::TestTools, Group::Bench],
        needs_build: true,
        needs_release_agent: false,
        idle_cpu: true,
        run: host::run,
    },
    Tier {
        name: "eco",
        about: "real Prometheus, promtool, schemathesis, curl (TLS + basic auth), 10k cgroups, `top` in tmux",
        groups: &[Group::EbpfBuild, Group::TestTools, Group::Eco],
        needs_build: true,
        needs_release_agent: false,
        idle_cpu: true,
        run: eco::run,
    },
    Tier {
        name: "vm",
        about: "kernel matrix under QEMU: Debian 5.10, 6.1, 6.12 (+ sid) × fentry, kprobe; exact counts",
        groups: &[Group::EbpfBuild, Group::Vm],
        needs_build: true,
        needs_release_agent: true,
        idle_cpu: false,
        run: vm::run,
    },
    Tier {
        name: "ship",
        about: "systemd unit, .deb, Kubernetes, Prometheus rules, dashboards: each checked by the real tool",
        groups: &[Group::EbpfBuild, Group::TestTools, Group::Eco, Group::Vm, Group::Ship],
        needs_build: true,
        needs_release_agent: true,
        idle_cpu: false,
        run: ship::run,
    },
    Tier {
        name: "fleet",
        about: "the .deb on booted Debian systems (systemd as PID 1, 6.1 and 6.12 in fentry mode), scraped by Prometheus",
        groups: &[Group::EbpfBuild, Group::TestTools, Group::Vm, Group::Ship],
        needs_build: true,
        needs_release_agent: true,
        idle_cpu: false,
        run: fleet::run,
    },
];

/// What a tier sees.
pub struct Context<'a> {
    pub ws: &'a Workspace,
    /// The release build of the agent (`vm`, `ship`, `fleet`).
    pub release: &'a release::ReleaseAgent,
    /// Running in CI (`CI` set and not `false`/`0`): a missing prerequisite is a failure.
    pub ci: bool,
}

/// How a tier that did not fail ended; a failure is an `Err`.
pub enum Outcome {
    Passed,
    /// A prerequisite of this machine is missing (never in CI); the reason.
    Skipped(String),
}

/// The `--tier` values: `all` and every tier's name.
pub fn name_parser() -> PossibleValuesParser {
    let all = PossibleValue::new("all").help("every tier (the default)");
    PossibleValuesParser::new(
        std::iter::once(all).chain(TIERS.iter().map(|t| PossibleValue::new(t.name).help(t.about))),
    )
}

/// The tiers named (or all of them for none or `all`), in table order.
pub fn select(names: &[String]) -> Vec<&'static Tier> {
    let all = names.is_empty() || names.iter().any(|n| n == "all");
    TIERS.iter().filter(|t| all || names.iter().any(|n| n == t.name)).collect()
}

/// Runs every command even when one fails, so a tier reports all its problems at once.
fn run_all(commands: impl IntoIterator<Item = Command>) -> Result<Outcome> {
    let failures: Vec<String> =
        commands.into_iter().filter_map(|mut cmd| process::run(&mut cmd).err()).map(|err| format!("{err:#}")).collect();
    match failures.as_slice() {
        [] => Ok(Outcome::Passed),
        [one] => bail!("{one}"),
        many => bail!("{} commands failed: {}", many.len(), many.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tiers: &[&Tier]) -> Vec<&'static str> {
        tiers.iter().map(|t| t.name).collect()
    }

    #[test]
    fn selection_keeps_table_order_and_expands_all() {
        let all: Vec<_> = TIERS.iter().map(|t| t.name).collect();
        assert_eq!(names(&select(&[])), all);
        assert_eq!(names(&select(&["all".into(), "lint".into()])), all);
        assert_eq!(names(&select(&["host".into(), "lint".into(), "host".into()])), ["lint", "host"]);
    }
}
