//! The scenarios' cgroup step (fresh cgroup, entered first) and the `cleanup-cgroup` subcommand.

use anyhow::{Context, Result};
use mmuscope_tests::cgroup::{self, CgroupPath, CgroupPlacement, Hierarchies};

use crate::cli::{CgroupArgs, CleanupArgs};

/// Creates `<parent>/<name>` (default name `<scenario>-<pid>`) in every hierarchy and moves this process in. Runs
/// before anything else a scenario does, so every invalidation of the run belongs to the new cgroup.
/// With `--cgroup-current`, stays where it was started instead (see [`cgroup::current`]).
pub fn enter_fresh(scenario: &str, args: &CgroupArgs) -> Result<CgroupPlacement> {
    if args.cgroup_current {
        let placement = cgroup::current(&Hierarchies::discover()?)?;
        let a = placement.attributed();
        eprintln!(
            "mmuscope-workload: staying in cgroup {} (attribution {:?}: id {})",
            a.path, placement.attribution, a.id
        );
        return Ok(placement);
    }
    let name = args.cgroup_name.clone().unwrap_or_else(|| format!("{scenario}-{}", std::process::id()));
    let path = CgroupPath::parse(&args.cgroup_parent)
        .and_then(|parent| parent.join(&name))
        .context("--cgroup-parent/--cgroup-name")?;
    let hierarchies = Hierarchies::discover()?;
    let placement = cgroup::create_and_enter(&hierarchies, &path)?;
    let a = placement.attributed();
    eprintln!(
        "mmuscope-workload: entered cgroup {path} (attribution {:?}: {} id {})",
        placement.attribution, a.path, a.id
    );
    Ok(placement)
}

/// The leaf name of the scenario cgroup's sibling for a second party (`<leaf>-initiator`: the cross-cgroup
/// initiator, the forking thread of `--fork-from-sibling-memcg`); the host tier removes it with the scenario's.
pub fn initiator_leaf(placement: &CgroupPlacement) -> String {
    let leaf = placement.default.path.as_str().rsplit('/').next().unwrap_or_default();
    format!("{leaf}-initiator")
}

pub fn cleanup(args: &CleanupArgs) -> Result<()> {
    let path = CgroupPath::parse(&args.path).context("--path")?;
    let hierarchies = Hierarchies::discover()?;
    cgroup::remove(&hierarchies, &path, args.prune_parents)?;
    eprintln!("mmuscope-workload: removed cgroup {path}");
    Ok(())
}
