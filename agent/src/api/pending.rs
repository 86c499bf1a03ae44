//! Endpoints whose data the kernel side does not collect yet: they answer 200 with `available: false`, an explicit
//! note and an empty list — never made-up data, and never a 5xx.

use serde::Serialize;
use utoipa::ToSchema;

/// `GET /api/v1/slow`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlowView {
    /// False until per-bracket samples are collected; the list is then always empty.
    pub available: bool,
    pub note: String,
    /// The threshold asked for, in seconds.
    pub threshold_seconds: f64,
    pub brackets: Vec<SlowBracket>,
}

/// One slow invalidation bracket.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlowBracket {
    pub cgroup: String,
    pub event: String,
    pub cause: String,
    pub pid: u32,
    pub duration_seconds: f64,
}

pub const SLOW_NOTE: &str = "Per-bracket samples (pid, cause, duration) are not collected by this version of the \
    agent; only aggregated histograms are. This list stays empty until they are.";
