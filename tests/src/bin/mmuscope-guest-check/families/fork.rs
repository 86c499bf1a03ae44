//! The fork families, for the parent's owner: eager copies of maybe-pinned pages (pages whose PFN differs between
//! parent and child), their bytes, PMD-mapped THPs split at fork, and whether the fork copied anything.

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Expectations};

pub const COPIES: &str = "mmuscope_fork_pinned_page_copies_total";
pub const COPY_BYTES: &str = "mmuscope_fork_pinned_copy_bytes_total";
pub const THP_SPLITS: &str = "mmuscope_fork_pinned_thp_splits_total";
pub const FORKS_WITH_PINNED: &str = "mmuscope_forks_with_pinned_pages_total";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    let Some(f) = &truth.fork else { return };
    for (metric, n) in [
        (COPIES, f.copied_pages),
        (COPY_BYTES, f.copied_bytes),
        (THP_SPLITS, f.thp_splits),
        (FORKS_WITH_PINNED, f.forks_with_pinned_pages),
    ] {
        out.checks.push(Check::new(metric, owner, &[], n));
    }
}
