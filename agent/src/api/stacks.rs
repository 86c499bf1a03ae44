//! `GET /api/v1/stacks`: kernel stacks of invalidations, double notifications and eager fork copies, captured on
//! demand for a few seconds, as folded stacks, JSON or an SVG flame graph.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    Json,
    extract::{RawQuery, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use mmuscope_abi::{Cause, DoubleKind, EVENT_UNKNOWN, StackKey, StackKind};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::{ApiState, ErrorBody, error::ApiError, params::Query};
use crate::{
    cgroups::HierarchyKind,
    probes::families,
    stacks::{self, Filter, NamedStack, Stacks},
};

/// Longest capture a request may ask for.
pub const MAX_SECONDS: u64 = 60;
/// Frame names of addresses no symbol covers (raw kernel addresses are never shown: they would reveal the
/// kernel's randomized base).
pub(super) const UNKNOWN_FRAME: &str = "[unknown]";

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only, see CgroupsParams
pub struct StacksParams {
    /// How long to capture, in seconds (1 to 60). Default 10. The response comes when the capture ends.
    #[param(minimum = 1, maximum = 60)]
    seconds: Option<u64>,
    /// Only events of this owner cgroup: its id (as in `/api/v1/cgroups`) or its path (the `cgroup` label).
    cgroup: Option<String>,
    /// Comma-separated kinds: `invalidation`, `double_notification`, `fork_copy`, or `all` (default: every kind
    /// this agent captures).
    kind: Option<String>,
    /// Only invalidations of these events (comma-separated `enum mmu_notifier_event` names as in the `event` label,
    /// e.g. `clear,unmap`; `unknown` in tracepoint mode). Needs `kind=invalidation`.
    event: Option<String>,
    /// Only invalidations of these causes (comma-separated, as in the `cause` label, e.g. `madvise,reclaim`). Needs
    /// `kind=invalidation`.
    cause: Option<String>,
    /// `folded` (text, one `cgroup;kind;outermost;…;innermost count` per line, the kind of a double notification
    /// as `double_notification:<double kind>`), `json`, or `svg` (a flame graph). Default `folded`.
    format: Option<String>,
}

/// `GET /api/v1/stacks?format=json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct StacksView {
    pub seconds: u64,
    /// The kinds captured.
    pub kinds: Vec<String>,
    /// The owner cgroup id captured, when filtered.
    pub cgroup_id: Option<u64>,
    /// Events counted, over every stack (not including `lost`).
    pub total: u64,
    /// Events whose stack could not be kept (the map of 1024 stacks was full, or the stack unreadable).
    pub lost: u64,
    /// Why frames are `[unknown]`, when symbols are unavailable.
    pub note: String,
    pub stacks: Vec<StackView>,
}

/// One kernel stack with its count.
#[derive(Debug, Serialize, ToSchema)]
pub struct StackView {
    /// Owner cgroup path and id.
    pub cgroup: String,
    pub cgroup_id: u64,
    pub kind: String,
    /// For `double_notification`: which kind of double (the `kind` label of
    /// `mmuscope_double_notifications_total`, e.g. `end_then_gather`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub double_kind: Option<String>,
    /// For `invalidation`: its event and cause (the labels of `mmuscope_invalidations_total`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    pub count: u64,
    /// Functions, innermost first; `name [module]` for module and BPF code.
    pub frames: Vec<String>,
}

/// The kinds this agent captures: those whose programs attached.
fn available(s: &ApiState) -> Vec<StackKind> {
    let report = s.exporter.report();
    StackKind::ALL
        .into_iter()
        .filter(|k| match k {
            StackKind::Invalidation => report.attached(families::brackets::ID),
            StackKind::DoubleNotification => {
                report.attached(families::secondary_tlb::ID) || report.attached(families::overlapping_brackets::ID)
            }
            StackKind::ForkCopy => report.attached(families::fork_copies::ID),
        })
        .collect()
}

/// Parses `kind`: a comma-separated list of names or `all`, each one available here.
fn parse_kinds(raw: Option<&str>, available: &[StackKind]) -> Result<Vec<StackKind>, ApiError> {
    let names: Vec<&str> = StackKind::ALL.into_iter().map(stacks::kind_name).collect();
    let Some(raw) = raw.filter(|r| *r != "all") else { return Ok(available.to_vec()) };
    let mut kinds = Vec::new();
    for part in raw.split(',') {
        let k = stacks::kind_of(part).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "kind must be `all` or a comma-separated list of {}, got {part:?}",
                names.join(", ")
            ))
        })?;
        if !available.contains(&k) {
            return Err(ApiError::BadRequest(format!(
                "kind {part:?} is not captured by this agent (its probes are not attached; see `mmuscope check`)"
            )));
        }
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

/// Kernel stacks of invalidations, double notifications and eager fork copies (those whose probes attached) for `seconds`,
/// per owner cgroup, symbolized. One request at a time (429 while another runs); 404 when the agent runs with
/// `--stacks.disable`.
#[utoipa::path(get, path = "/api/v1/stacks", tag = "cgroups", params(StacksParams),
    responses(
        (status = 200, description = "Folded stacks (`format=folded`), the stacks as JSON (`format=json`) or an SVG \
            flame graph (`format=svg`)",
            content((String = "text/plain"), (StacksView = "application/json"), (String = "image/svg+xml"))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn stacks(State(s): State<Arc<ApiState>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let q = Query::parse(q.as_deref(), &["seconds", "cgroup", "kind", "event", "cause", "format"])?;
    let seconds = q.int("seconds", 1, MAX_SECONDS, 10)?;
    let format = q.choice("format", &["folded", "json", "svg"], "folded")?;
    if s.stack_capture_off {
        return Err(ApiError::NotFound(
            "the stack capture is switched off on this agent (it runs with --stacks.disable)".into(),
        ));
    }
    let Some(source) = s.stacks.as_deref() else {
        return Err(ApiError::Unavailable("the stack maps are not available on this agent".into()));
    };
    let kinds = parse_kinds(q.get("kind"), &available(&s))?;
    if kinds.is_empty() {
        return Err(ApiError::BadRequest(
            "no kind of stack is captured by this agent (none of their probes attached; see `mmuscope check`)".into(),
        ));
    }
    let only = InvalidationFilter::parse(q.get("event"), q.get("cause"), &s.exporter.event_names(), &kinds)?;
    let cgroup_id = match q.get("cgroup") {
        None => None,
        Some(c) => Some(cgroup_id(&s, c)?),
    };
    let filter = Filter { kinds: kinds.iter().fold(0, |b, k| b | k.bit()), cgroup_id: cgroup_id.unwrap_or(0) };
    let session = source.begin(filter).map_err(|e| match e {
        stacks::BeginError::Busy => ApiError::TooMany(e.to_string()),
        stacks::BeginError::Map(_) => ApiError::Unavailable(e.to_string()),
    })?;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let mut collected = session.collect().map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
    drop(session);
    // Before naming: symbolizing reads the snapshot, which stacks the filter drops need not pay for.
    collected.stacks.retain(|r| only.keeps(&r.key, &event_name(&s, r.key.detail)));
    // Reading the symbol snapshot blocks (a few MB): off the runtime's two workers, which serve /metrics.
    let named = {
        let (s, raw) = (s.clone(), collected.stacks);
        tokio::task::spawn_blocking(move || s.stacks.as_deref().map(|src| name(&s, src, &raw)).unwrap_or_default())
            .await
            .map_err(|e| ApiError::Unavailable(format!("symbolizing the stacks: {e}")))?
    };
    let kind_names: Vec<String> = kinds.iter().map(|k| stacks::kind_name(*k).to_string()).collect();
    match format {
        "json" => Ok(Json(StacksView {
            seconds,
            kinds: kind_names,
            cgroup_id,
            total: named.iter().map(|n| n.0.count).sum(),
            lost: collected.lost,
            note: source.symbols_unavailable().map_or(String::new(), |w| format!("frames are {UNKNOWN_FRAME}: {w}")),
            stacks: named
                .into_iter()
                .map(|(n, id)| StackView {
                    cgroup: n.cgroup,
                    cgroup_id: id,
                    kind: n.kind.to_string(),
                    double_kind: n.double_kind.map(str::to_string),
                    event: n.event,
                    cause: n.cause.map(str::to_string),
                    count: n.count,
                    frames: n.frames,
                })
                .collect(),
        })
        .into_response()),
        _ => {
            let stacks: Vec<NamedStack> = named.into_iter().map(|(n, _)| n).collect();
            let lines = stacks::folded(&stacks);
            if format == "svg" {
                let title = format!("mmuscope: kernel stacks of {} over {seconds} s", kind_names.join(", "));
                let svg = stacks::svg(&lines, &title).map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
                Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
            } else {
                let mut body = lines.join("\n");
                if !body.is_empty() {
                    body.push('\n');
                }
                Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response())
            }
        }
    }
}

/// The event name of an invalidation stack's `detail`, as `/metrics` labels it (`unknown` in tracepoint mode).
fn event_name(s: &ApiState, detail: u32) -> String {
    match StackKey::invalidation_parts(detail).0 {
        EVENT_UNKNOWN => "unknown".to_string(),
        event => s.exporter.event_name(event),
    }
}

/// `event=` and `cause=`: which invalidations a request keeps (every one when both are absent).
#[derive(Debug, Default, PartialEq, Eq)]
struct InvalidationFilter {
    events: Option<Vec<String>>,
    causes: Option<Vec<Cause>>,
}

impl InvalidationFilter {
    /// Each list checked against the names this agent gives (`events`, and [`Cause`]'s labels); both need a request
    /// of invalidations only, since no other kind has an event or a cause.
    fn parse(
        event: Option<&str>,
        cause: Option<&str>,
        events: &[String],
        kinds: &[StackKind],
    ) -> Result<Self, ApiError> {
        if (event.is_some() || cause.is_some()) && kinds != [StackKind::Invalidation] {
            return Err(ApiError::BadRequest(
                "event= and cause= select invalidations: ask for kind=invalidation alone".into(),
            ));
        }
        /// Each comma-separated part of `raw` as the value `known` names it.
        fn list<T: Clone>(raw: &str, what: &str, known: &[(&str, T)]) -> Result<Vec<T>, ApiError> {
            raw.split(',')
                .map(|part| {
                    known.iter().find(|(name, _)| *name == part).map(|(_, v)| v.clone()).ok_or_else(|| {
                        let names: Vec<&str> = known.iter().map(|(name, _)| *name).collect();
                        ApiError::BadRequest(format!(
                            "{what} must be a comma-separated list of {}, got {part:?}",
                            names.join(", ")
                        ))
                    })
                })
                .collect()
        }
        let events: Vec<(&str, String)> = events.iter().map(|e| (e.as_str(), e.clone())).collect();
        let causes: Vec<(&str, Cause)> = Cause::ALL.iter().map(|c| (c.label(), *c)).collect();
        Ok(Self {
            events: event.map(|e| list(e, "event", &events)).transpose()?,
            causes: cause.map(|c| list(c, "cause", &causes)).transpose()?,
        })
    }

    /// Whether the stack of `key` (an invalidation of event `event`) stays: any stack that is not an invalidation
    /// does (the kinds were checked in [`Self::parse`]).
    fn keeps(&self, key: &StackKey, event: &str) -> bool {
        if key.kind != StackKind::Invalidation as u32 {
            return true;
        }
        let cause = Cause::from_raw(StackKey::invalidation_parts(key.detail).1);
        let event_ok = self.events.as_ref().is_none_or(|e| e.iter().any(|x| x == event));
        let cause_ok = self.causes.as_ref().is_none_or(|c| c.contains(&cause));
        event_ok && cause_ok
    }
}

/// A cgroup id from `cgroup=`: an integer, or a path the agent knows.
fn cgroup_id(s: &ApiState, raw: &str) -> Result<u64, ApiError> {
    match parse_cgroup(raw)? {
        CgroupArg::Id(id) => Ok(id),
        CgroupArg::Path(path) => s
            .exporter
            .with_cgroups(|n| n.id_of(path))
            .map(|(_, id)| id)
            .ok_or_else(|| ApiError::NotFound(format!("no live cgroup with path {path:?} is known to the agent"))),
    }
}

/// What `cgroup=` names.
#[derive(Debug, PartialEq, Eq)]
enum CgroupArg<'a> {
    Id(u64),
    Path(&'a str),
}

fn parse_cgroup(raw: &str) -> Result<CgroupArg<'_>, ApiError> {
    if raw.starts_with('/') {
        return Ok(CgroupArg::Path(raw));
    }
    match raw.parse::<u64>() {
        Ok(id) if id > 0 => Ok(CgroupArg::Id(id)),
        _ => Err(ApiError::BadRequest(format!(
            "cgroup must be a cgroup id (a positive integer) or a path starting with '/', got {raw:?}"
        ))),
    }
}

/// Stacks with their cgroup paths and function names.
fn name(s: &ApiState, source: &Stacks, raw: &[stacks::RawStack]) -> Vec<(NamedStack, u64)> {
    let addrs: HashSet<u64> = raw.iter().flat_map(|r| r.addrs.iter().copied()).collect();
    let symbols = source.symbolize(&addrs).unwrap_or_else(|e| {
        tracing::warn!("reading the kernel symbol snapshot failed: {e}");
        Default::default()
    });
    s.exporter.with_cgroups(|names| {
        raw.iter()
            .map(|r| {
                let which = HierarchyKind::of_key(r.key.flags);
                let cgroup = names.info(which, r.key.cgroup_id).map_or(crate::cgroups::UNKNOWN, |i| i.path.as_str());
                let kind = StackKind::ALL.into_iter().find(|k| *k as u32 == r.key.kind);
                let double_kind = (kind == Some(StackKind::DoubleNotification))
                    .then(|| DoubleKind::from_u32(r.key.detail).map_or("unknown", DoubleKind::label));
                let (event, cause) = if kind == Some(StackKind::Invalidation) {
                    let (event, cause) = StackKey::invalidation_parts(r.key.detail);
                    let event =
                        if event == EVENT_UNKNOWN { "unknown".to_string() } else { s.exporter.event_name(event) };
                    (Some(event), Some(Cause::from_raw(cause).label()))
                } else {
                    (None, None)
                };
                let kind = kind.map_or("unknown", stacks::kind_name);
                let frames = r
                    .addrs
                    .iter()
                    .map(|a| symbols.get(a).cloned().unwrap_or_else(|| UNKNOWN_FRAME.to_string()))
                    .collect();
                let stack =
                    NamedStack { cgroup: cgroup.to_string(), kind, double_kind, event, cause, frames, count: r.count };
                (stack, r.key.cgroup_id)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_validated_against_what_is_captured() {
        let avail = [StackKind::Invalidation];
        assert_eq!(parse_kinds(None, &avail).unwrap(), avail);
        assert_eq!(parse_kinds(Some("all"), &avail).unwrap(), avail);
        assert_eq!(parse_kinds(Some("invalidation,invalidation"), &avail).unwrap(), avail);
        for bad in ["bogus", "invalidation,", "fork_copy", ""] {
            let e = parse_kinds(Some(bad), &avail).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}: {e}");
        }
        assert!(parse_kinds(Some("fork_copy"), &avail).unwrap_err().to_string().contains("not captured"));
    }

    #[test]
    fn cgroup_is_a_positive_id_or_a_path() {
        assert_eq!(parse_cgroup("279380").unwrap(), CgroupArg::Id(279380));
        assert_eq!(parse_cgroup("/system.slice/a b").unwrap(), CgroupArg::Path("/system.slice/a b"));
        for bad in ["0", "-1", "", "system.slice", "12x", "99999999999999999999999"] {
            let e = parse_cgroup(bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{bad}: {e}");
            assert!(e.to_string().contains("cgroup must be"), "{e}");
        }
    }

    #[test]
    fn event_and_cause_filters_need_invalidations_and_known_names() {
        let events = vec!["unmap".to_string(), "clear".to_string(), "unknown".to_string()];
        let inv = [StackKind::Invalidation];
        let f = InvalidationFilter::parse(Some("clear"), Some("madvise,reclaim"), &events, &inv).unwrap();
        let key = |kind: StackKind, cause: Cause| StackKey {
            kind: kind as u32,
            detail: StackKey::invalidation_detail(1, cause as u32),
            ..StackKey::default()
        };
        let inv_key = |cause| key(StackKind::Invalidation, cause);
        assert!(f.keeps(&inv_key(Cause::Madvise), "clear"));
        assert!(f.keeps(&inv_key(Cause::Reclaim), "clear"));
        assert!(!f.keeps(&inv_key(Cause::Madvise), "unmap"), "another event");
        assert!(!f.keeps(&inv_key(Cause::Munmap), "clear"), "another cause");
        assert!(f.keeps(&key(StackKind::ForkCopy, Cause::Munmap), "unknown"), "not an invalidation");
        let none = InvalidationFilter::parse(None, None, &events, &StackKind::ALL).unwrap();
        assert_eq!(none, InvalidationFilter::default());
        assert!(none.keeps(&inv_key(Cause::Munmap), "unmap"));
        for (event, cause, kinds) in [
            (Some("bogus"), None, &inv[..]),
            (None, Some("madvise,"), &inv[..]),
            (None, Some("thp"), &inv[..]),
            (Some("clear"), None, &StackKind::ALL[..]),
        ] {
            let e = InvalidationFilter::parse(event, cause, &events, kinds).unwrap_err();
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{event:?} {cause:?}: {e}");
        }
    }

    #[test]
    fn too_many_is_a_429() {
        assert_eq!(ApiError::TooMany("x".into()).status(), StatusCode::TOO_MANY_REQUESTS);
    }
}
