//! `fork-pinned-thp`: one 2 MiB PMD-mapped THP (verified through `AnonHugePages`), pinned with
//! `IORING_REGISTER_BUFFERS`, then one fork(). Truth: fork splits the parent's PMD (`AnonHugePages` 2048 kB → 0) and
//! copies all 512 pages for the child. See `fork_common` for the kernel path.

use anyhow::Result;
use mmuscope_tests::truth::{GroundTruth, ScenarioParams};

use super::fork_common::{self, ForkSpec};
use crate::cli::ForkThpArgs;

pub const NAME: &str = "fork-pinned-thp";

pub fn run(args: &ForkThpArgs) -> Result<GroundTruth> {
    let spec = ForkSpec { name: NAME, pages: 0, thp: true, pinned: true, params: ScenarioParams::ForkPinnedThp };
    fork_common::run(&spec, &args.cgroup, &args.agent, false, false)
}
