//! `fork-unpinned --pages N`: `fork-pinned` without the pin. Truth: no copies (parent and child share every page
//! copy-on-write, same PFNs), no fork with pinned pages. The control for `fork-pinned`.

use anyhow::Result;
use mmuscope_tests::truth::{GroundTruth, ScenarioParams};

use super::fork_common::{self, ForkSpec};
use crate::cli::ForkPagesArgs;

pub const NAME: &str = "fork-unpinned";

pub fn run(args: &ForkPagesArgs) -> Result<GroundTruth> {
    let spec =
        ForkSpec { name: NAME, pages: args.pages, thp: false, pinned: false, params: ScenarioParams::ForkUnpinned };
    fork_common::run(&spec, &args.cgroup, &args.agent, args.hold, args.fork_from_sibling_memcg)
}
