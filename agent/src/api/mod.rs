//! The read-only JSON API under `/api/v1`, and its OpenAPI 3.1 document (`/api/v1/openapi.json`), generated from
//! these handlers and types with utoipa.
//!
//! Parameters are validated strictly ([`params`]); every error is a JSON `{"error": "..."}` with a 4xx status
//! ([`error`]). Reads of the kernel maps run on the blocking pool, as for `/metrics`.

mod error;
mod params;
mod slow;
mod stacks;
mod subscribers;
mod views;

use std::{
    sync::Arc,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::{Path, RawQuery, State},
    http::header,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;
use utoipa::{IntoParams, OpenApi, ToSchema};

use error::ApiError;
pub use error::{ErrorBody, json_error};
use params::Query;
pub use slow::SlowSource;
pub use stacks::MAX_SECONDS as MAX_STACK_SECONDS;
use subscribers::SubscribersView;
use views::{CgroupsStatus, FamilyStatus, ProbesView, StatusView};

use crate::{
    cgroups::HierarchyKind,
    export::Exporter,
    model::{self, Available, CgroupView, KubernetesView, LatencyView},
    probes::{Mode, families},
};

/// What the handlers read.
pub struct ApiState {
    pub exporter: Arc<Exporter>,
    pub started: Instant,
    pub started_unix: f64,
    available: Available,
    /// Slow-bracket records, where the brackets are timed.
    slow: Option<SlowSource>,
    /// The on-demand stack capture (`/api/v1/stacks`), and the symbol snapshot `/api/v1/slow` names frames with.
    stacks: Option<Arc<crate::stacks::Stacks>>,
    /// `--stacks.disable`: the programs were loaded without the capture, so `/api/v1/stacks` answers 404.
    stack_capture_off: bool,
}

impl ApiState {
    pub fn new(exporter: Arc<Exporter>) -> Self {
        let report = exporter.report();
        let available = Available {
            latency: report.attached_alternative(families::brackets::ID).is_some_and(|a| a.mode != Mode::Tracepoint),
            fork_copies: report.attached(families::fork_copies::ID),
            double_notifications: report.attached(families::secondary_tlb::ID),
        };
        let started_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        Self {
            exporter,
            started: Instant::now(),
            started_unix,
            available,
            slow: None,
            stacks: None,
            stack_capture_off: false,
        }
    }

    /// Serves `/api/v1/slow` from `source`.
    pub fn with_slow(self, source: SlowSource) -> Self {
        Self { slow: Some(source), ..self }
    }

    /// Serves `/api/v1/stacks` from `stacks`.
    pub fn with_stacks(self, stacks: Arc<crate::stacks::Stacks>) -> Self {
        Self { stacks: Some(stacks), ..self }
    }

    /// Answers `/api/v1/stacks` with 404: the agent runs with `--stacks.disable`.
    pub fn with_stack_capture_off(self) -> Self {
        Self { stack_capture_off: true, ..self }
    }
}

type St = State<Arc<ApiState>>;

pub fn router() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/probes", get(probes))
        .route("/api/v1/cgroups", get(cgroups))
        .route("/api/v1/cgroups/{id}", get(cgroup))
        .route("/api/v1/subscribers", get(subscribers))
        .route("/api/v1/slow", get(slow::slow))
        .route("/api/v1/stacks", get(stacks::stacks))
        .route("/api/v1/openapi.json", get(openapi))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "mmuscope API",
        description = "Read-only view of secondary-MMU invalidation activity per cgroup on this host. Every error is \
                       a JSON object `{\"error\": \"...\"}` with a 4xx status.",
        license(name = "GPL-2.0-only OR MIT")
    ),
    paths(status, probes, cgroups, cgroup, subscribers, slow::slow, stacks::stacks, openapi),
    components(schemas(SortKey, HierarchyKind)),
    tags(
        (name = "agent", description = "The agent and its probes"),
        (name = "cgroups", description = "Invalidation activity per memory cgroup"),
        (name = "subscribers", description = "Who subscribes to mmu_notifier and who pins memory"),
        (name = "pending", description = "Endpoints whose data is not collected yet (they say so)")
    )
)]
pub struct ApiDoc;

/// The OpenAPI document as served.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Agent version, kernel, probe plan summary, uptime and cgroup cardinality figures.
#[utoipa::path(get, path = "/api/v1/status", tag = "agent",
    responses((status = 200, body = StatusView), (status = 400, body = ErrorBody)))]
async fn status(State(s): St, RawQuery(q): RawQuery) -> Result<Json<StatusView>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let report = s.exporter.report();
    let build = s.exporter.build();
    let cgroups = s.exporter.with_cgroups(|n| {
        let p = n.policy();
        CgroupsStatus {
            tracked: n.tracked() as u64,
            overflow_total: n.overflow_total(),
            max_cgroups: p.max_cgroups.map(|m| m as u64),
            deleted_ttl_seconds: p.deleted_ttl.as_secs_f64(),
        }
    });
    let families: Vec<FamilyStatus> = views::families(report);
    Ok(Json(StatusView {
        version: build.version.to_string(),
        kernel_release: build.kernel.clone(),
        generation: build.generation.to_string(),
        generation_description: report.generation_description.to_string(),
        uptime_seconds: s.started.elapsed().as_secs_f64(),
        started_at_unix_seconds: s.started_unix,
        families,
        cgroups,
    }))
}

/// The attach plan: per probe family every alternative with its status and reason (as `mmuscope check --json`).
#[utoipa::path(get, path = "/api/v1/probes", tag = "agent",
    responses((status = 200, body = ProbesView), (status = 400, body = ErrorBody)))]
async fn probes(State(s): St, RawQuery(q): RawQuery) -> Result<Json<ProbesView>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    Ok(Json(views::probes(s.exporter.report())))
}

/// Sort keys of `/api/v1/cgroups` (all descending except `cgroup` and `id`).
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)] // the schema of `sort`; parsing checks SORT_KEYS, which a test keeps equal to it
pub enum SortKey {
    Invalidations,
    P99,
    DoubleNotifications,
    ForkCopies,
    Cgroup,
    Id,
}

const SORT_KEYS: &[&str] = &["invalidations", "p99", "double_notifications", "fork_copies", "cgroup", "id"];
pub const MAX_LIMIT: u64 = 10_000;

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; parsing is strict and manual (params.rs)
struct CgroupsParams {
    /// Order of the list (descending, except `cgroup` and `id`). Default `invalidations`.
    sort: Option<SortKey>,
    /// At most this many cgroups (1 to 10000). Default 100.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CgroupList {
    /// Cgroups with activity in the kernel maps (before `limit`).
    pub total: u64,
    pub sort: String,
    pub limit: u64,
    pub cgroups: Vec<CgroupView>,
}

/// Cgroups with invalidation activity, sorted and limited. Unlike `/metrics`, not subject to `--max-cgroups`:
/// `aggregated` says which ones `/metrics` folds into `cgroup="other"`.
#[utoipa::path(get, path = "/api/v1/cgroups", tag = "cgroups", params(CgroupsParams),
    responses((status = 200, body = CgroupList), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn cgroups(State(s): St, RawQuery(q): RawQuery) -> Result<Json<CgroupList>, ApiError> {
    let q = Query::parse(q.as_deref(), &["sort", "limit"])?;
    let sort = q.choice("sort", SORT_KEYS, "invalidations")?;
    let limit = q.int("limit", 1, MAX_LIMIT, 100)?;
    let mut all = read_cgroups(&s).await?;
    sort_cgroups(&mut all, sort);
    let total = all.len() as u64;
    all.truncate(limit as usize);
    Ok(Json(CgroupList { total, sort: sort.to_string(), limit, cgroups: all }))
}

fn sort_cgroups(all: &mut [CgroupView], key: &str) {
    let desc = |v: &CgroupView| -> (Option<f64>, u64) {
        match key {
            "p99" => (v.latency.as_ref().and_then(|l| l.p99_seconds), v.invalidations),
            "double_notifications" => (v.double_notifications.map(|n| n as f64), v.invalidations),
            "fork_copies" => (v.fork_pinned_page_copies.map(|n| n as f64), v.invalidations),
            _ => (Some(v.invalidations as f64), v.invalidations),
        }
    };
    match key {
        "cgroup" => all.sort_by(|a, b| a.cgroup.cmp(&b.cgroup).then(a.id.cmp(&b.id))),
        "id" => all.sort_by_key(|v| (v.id, v.hierarchy)),
        _ => all.sort_by(|a, b| {
            let (ka, kb) = (desc(a), desc(b));
            // Nulls last, then descending, then by id for a stable order.
            kb.0.is_some()
                .cmp(&ka.0.is_some())
                .then(kb.0.unwrap_or(0.0).total_cmp(&ka.0.unwrap_or(0.0)))
                .then(kb.1.cmp(&ka.1))
                .then(a.id.cmp(&b.id))
        }),
    }
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documentation only, see CgroupsParams
struct CgroupParams {
    /// The hierarchy of the id (default `memory`, the memory controller's).
    hierarchy: Option<HierarchyKind>,
}

/// One cgroup by id (kernfs node id = inode number of its directory).
#[utoipa::path(get, path = "/api/v1/cgroups/{id}", tag = "cgroups",
    params(("id" = u64, Path, description = "Cgroup id", minimum = 0), CgroupParams),
    responses((status = 200, body = CgroupView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)))]
async fn cgroup(State(s): St, Path(id): Path<String>, RawQuery(q): RawQuery) -> Result<Json<CgroupView>, ApiError> {
    let q = Query::parse(q.as_deref(), &["hierarchy"])?;
    let which = match q.choice("hierarchy", &["memory", "default"], "memory")? {
        "default" => HierarchyKind::Default,
        _ => HierarchyKind::Memory,
    };
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("cgroup id must be a non-negative integer, got {id:?}")))?;
    let all = read_cgroups(&s).await?;
    all.into_iter().find(|v| v.id == id && v.hierarchy == which).map(Json).ok_or_else(|| {
        ApiError::NotFound(format!("no activity recorded for cgroup id {id} in the {which:?} hierarchy"))
    })
}

async fn read_cgroups(s: &Arc<ApiState>) -> Result<Vec<CgroupView>, ApiError> {
    let s = s.clone();
    let available = s.available;
    tokio::task::spawn_blocking(move || {
        s.exporter.with_reading(|snap, names, events| model::cgroups(snap, names, events, available))
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(format!("{e:#}")))
}

/// Address spaces with mmu_notifier subscriptions or long-term pinned pages: pid, comm, owner cgroup, subscriber kinds,
/// callback symbols and pinned bytes, from the task-iterator inventory.
#[utoipa::path(get, path = "/api/v1/subscribers", tag = "subscribers",
    responses((status = 200, body = SubscribersView), (status = 400, body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn subscribers(State(s): St, RawQuery(q): RawQuery) -> Result<Json<SubscribersView>, ApiError> {
    Query::parse(q.as_deref(), &[])?;
    let view = tokio::task::spawn_blocking(move || {
        s.exporter.with_reading(|_, names, _| {
            subscribers::view(s.exporter.subscribers().as_deref(), names, s.exporter.page_size())
        })
    })
    .await
    .map_err(|e| ApiError::Unavailable(e.to_string()))?
    .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
    Ok(Json(view))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "agent",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json"),
        (status = 400, body = ErrorBody)))]
async fn openapi(RawQuery(q): RawQuery) -> Response {
    if let Err(e) = Query::parse(q.as_deref(), &[]) {
        return e.into_response();
    }
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

#[allow(dead_code)] // keeps the nested schemas referenced from the document
fn _schemas(_: KubernetesView, _: LatencyView) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_describes_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for p in [
            "/api/v1/status",
            "/api/v1/probes",
            "/api/v1/cgroups",
            "/api/v1/cgroups/{id}",
            "/api/v1/subscribers",
            "/api/v1/slow",
            "/api/v1/stacks",
            "/api/v1/openapi.json",
        ] {
            assert!(doc["paths"][p]["get"].is_object(), "{p} missing");
        }
        let limit = doc["paths"]["/api/v1/cgroups"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "limit")
            .unwrap()
            .clone();
        assert_eq!(limit["schema"]["maximum"], 10000);
        assert!(doc["components"]["schemas"]["CgroupView"].is_object());
        let stacks = &doc["paths"]["/api/v1/stacks"]["get"]["responses"];
        for (code, types) in
            [("200", &["text/plain", "application/json", "image/svg+xml"][..]), ("429", &["application/json"][..])]
        {
            for t in types {
                assert!(stacks[code]["content"][t].is_object(), "/api/v1/stacks {code} lacks {t}: {}", stacks[code]);
            }
        }
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        let params = doc["paths"]["/api/v1/cgroups"]["get"]["parameters"].as_array().unwrap().clone();
        let sort = params.iter().find(|p| p["name"] == "sort").unwrap()["schema"].clone();
        println!("sort parameter schema: {sort}");
        let text = sort.to_string();
        let reference = text.split("#/components/schemas/").nth(1).map(|r| r.split('"').next().unwrap().to_string());
        let schema = match reference {
            Some(name) => doc["components"]["schemas"][name].clone(),
            None => sort,
        };
        let names: Vec<&str> = schema["enum"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(names, SORT_KEYS);
        // Every reference resolves.
        let text = doc.to_string();
        for r in text.split("\"#/components/schemas/").skip(1) {
            let name = r.split('"').next().unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "dangling $ref to {name}");
        }
    }
}
