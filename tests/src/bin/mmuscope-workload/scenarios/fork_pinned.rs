//! `fork-pinned --pages N`: N private anonymous 4 KiB pages (`MADV_NOHUGEPAGE`), all written, pinned long-term with
//! `IORING_REGISTER_BUFFERS`, then one fork(). Truth: every pinned page is copied for the child (its PFN differs),
//! `copied_bytes` = N × 4 KiB, one fork with pinned pages, no THP split. See `fork_common` for the kernel path.

use anyhow::Result;
use mmuscope_tests::truth::{GroundTruth, ScenarioParams};

use super::fork_common::{self, ForkSpec};
use crate::cli::ForkPagesArgs;

pub const NAME: &str = "fork-pinned";

pub fn run(args: &ForkPagesArgs) -> Result<GroundTruth> {
    let spec = ForkSpec { name: NAME, pages: args.pages, thp: false, pinned: true, params: ScenarioParams::ForkPinned };
    fork_common::run(&spec, &args.cgroup, &args.agent, args.hold, args.fork_from_sibling_memcg)
}
