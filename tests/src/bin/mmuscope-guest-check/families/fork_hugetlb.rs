//! The hugetlb fork family, for the parent's owner: huge pages copied eagerly at fork (PFNs differ between parent
//! and child) and their bytes (each the huge page size the workload read from `/proc/meminfo`).

use mmuscope_tests::truth::GroundTruth;

use super::{Check, Expectations};

pub const COPIES: &str = "mmuscope_fork_pinned_hugetlb_copies_total";
pub const COPY_BYTES: &str = "mmuscope_fork_pinned_hugetlb_copy_bytes_total";

pub fn expect(truth: &GroundTruth, owner: &str, out: &mut Expectations) {
    let Some(h) = &truth.hugetlb_fork else { return };
    out.checks.push(Check::new(COPIES, owner, &[], h.copied_huge_pages));
    out.checks.push(Check::new(COPY_BYTES, owner, &[], h.copied_bytes));
}
