//! `GET /api/v1/slow`: the recent slowest brackets, with cause, process, range and kernel stack.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use mmuscope_abi::{Cause, SlowBracket};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, error::ApiError, params::Query, stacks::UNKNOWN_FRAME};
use crate::{cgroups::HierarchyKind, slow};

/// `GET /api/v1/slow`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlowView {
    /// False when the brackets are not timed here (tracepoint mode) or the ring buffer is unavailable; the list is
    /// then empty and `note` says why.
    pub available: bool,
    pub note: String,
    /// The threshold asked for, in seconds.
    pub threshold_seconds: f64,
    /// The agent's `--slow.min-duration`: shorter brackets are never recorded.
    pub min_recorded_seconds: f64,
    pub brackets: Vec<SlowBracketView>,
}

/// One slow invalidation bracket.
#[derive(Debug, Serialize, ToSchema)]
pub struct SlowBracketView {
    /// Owner memory cgroup of the invalidated memory.
    pub cgroup: String,
    pub event: String,
    pub cause: String,
    /// Process and thread that ran the bracket (the initiator, which may differ from the owner).
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// The invalidated range, hexadecimal, and its size.
    pub start: String,
    pub end: String,
    pub bytes: u64,
    pub duration_seconds: f64,
    /// How long ago the bracket ended.
    pub age_seconds: f64,
    /// Kernel stack where the bracket ended (the callers of `invalidate_range_end`, which closes what the same
    /// function opened), innermost first: function names, `name [module]` for module and BPF code, `[unknown]` where
    /// no symbol is known (raw addresses are never shown). Empty when the kernel could not take it.
    pub stack: Vec<String>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only, see CgroupsParams
pub struct SlowParams {
    /// Only brackets slower than this many microseconds (0 to 60000000). Default 1000.
    #[param(minimum = 0, maximum = 60000000)]
    threshold_us: Option<u64>,
    /// At most this many brackets (1 to 1000). Default 50.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u64>,
    /// Only brackets run by this process (thread group id).
    #[param(minimum = 1, maximum = 4194304)]
    pid: Option<u64>,
}

/// The log and the threshold it records from.
pub struct SlowSource {
    pub log: Arc<slow::SlowLog>,
    pub min_ns: u64,
}

/// Recent slowest brackets above a threshold, with cause, pid and range (fentry and kprobe modes).
#[utoipa::path(get, path = "/api/v1/slow", tag = "cgroups", params(SlowParams),
    responses((status = 200, body = SlowView), (status = 400, body = ErrorBody)))]
pub async fn slow(State(s): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Result<Json<SlowView>, ApiError> {
    let q = Query::parse(q.as_deref(), &["threshold_us", "limit", "pid"])?;
    let threshold_us = q.int("threshold_us", 0, 60_000_000, 1000)?;
    let limit = q.int("limit", 1, 1000, 50)?;
    // Absent: every process (0); given, it must be a real pid (the documented minimum is 1).
    let pid = q.int("pid", 1, 4_194_304, 0)?;
    let threshold_seconds = threshold_us as f64 / 1e6;
    let Some(source) = &s.slow else {
        return Ok(Json(SlowView {
            available: false,
            note:
                "Brackets are not timed in this probe mode (tracepoint fallback: no end event); see `mmuscope check`."
                    .into(),
            threshold_seconds,
            min_recorded_seconds: 0.0,
            brackets: Vec::new(),
        }));
    };
    let pid = u32::try_from(pid).ok().filter(|p| *p != 0);
    let records = source.log.slowest(threshold_us.saturating_mul(1000), pid, limit as usize);
    let now = slow::monotonic_ns();
    // Reading the symbol snapshot blocks (a few MB): off the runtime's two workers, which serve /metrics.
    let symbols = {
        let (s, records) = (s.clone(), records.clone());
        tokio::task::spawn_blocking(move || symbolize(&s, &records)).await.unwrap_or_default()
    };
    let brackets = records.iter().map(|r| view(&s, r, now, &symbols)).collect();
    Ok(Json(SlowView {
        available: true,
        note: format!("The {} most recent brackets of at least the minimum are kept.", slow::CAPACITY),
        threshold_seconds,
        min_recorded_seconds: source.min_ns as f64 / 1e9,
        brackets,
    }))
}

/// Names of every frame of `records`, read once from the symbol snapshot of `/api/v1/stacks`.
fn symbolize(s: &ApiState, records: &[SlowBracket]) -> BTreeMap<u64, String> {
    let Some(stacks) = s.stacks.as_deref() else { return BTreeMap::new() };
    let addrs: HashSet<u64> = records.iter().flat_map(|r| r.frames().iter().copied()).collect();
    stacks.symbolize(&addrs).unwrap_or_else(|e| {
        tracing::warn!("reading the kernel symbol snapshot failed: {e}");
        BTreeMap::new()
    })
}

fn view(s: &ApiState, r: &SlowBracket, now: u64, symbols: &BTreeMap<u64, String>) -> SlowBracketView {
    let cgroup =
        s.exporter.with_cgroups(|names| names.labels(HierarchyKind::of_key(r.flags), r.cgroup_id).cgroup.to_string());
    let comm_len = r.comm.iter().position(|b| *b == 0).unwrap_or(r.comm.len());
    SlowBracketView {
        cgroup,
        event: s.exporter.event_name(r.event),
        cause: Cause::from_raw(r.cause).label().to_string(),
        pid: r.tgid,
        tid: r.tid,
        comm: String::from_utf8_lossy(&r.comm[..comm_len]).into_owned(),
        start: format!("{:#x}", r.start),
        end: format!("{:#x}", r.end),
        bytes: r.end.saturating_sub(r.start),
        duration_seconds: r.duration_ns as f64 / 1e9,
        age_seconds: now.saturating_sub(r.t_end_ns) as f64 / 1e9,
        stack: r
            .frames()
            .iter()
            .map(|a| symbols.get(a).cloned().unwrap_or_else(|| UNKNOWN_FRAME.to_string()))
            .collect(),
    }
}
