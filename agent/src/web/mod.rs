//! The HTTP surface: `/metrics` (text exposition), `/healthz`, `/readyz`, the JSON API (`/api/v1/...`, see
//! [`crate::api`]) and a small landing page. Read-only; every error is JSON. TLS and basic auth come from
//! `--web.config.file` ([`crate::webconfig`]); [`serve`] accepts connections, [`auth`] checks requests.

mod access;
mod auth;
mod bodies;
mod coalesce;
mod collector;
mod gzip;
mod serve;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::get,
};

pub use serve::serve;

use crate::{
    api::{self, ApiState, json_error},
    probes::PlanReport,
};

pub use access::Access;
pub use collector::Collector;

pub struct AppState {
    /// Runs the collections behind `/metrics`.
    pub collector: Collector,
    /// Concurrent `/metrics` requests share one collection (and its gzip form).
    pub scrapes: coalesce::Coalesced<gzip::Exposition>,
    pub report: PlanReport,
    pub telemetry_path: String,
    pub api: Arc<ApiState>,
    /// `--web.disable-process-details`, `--web.health-requires-auth` (changed on SIGHUP).
    pub access: Arc<Access>,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(landing))
        .route(&state.telemetry_path, get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state.clone())
        .merge(api::router().with_state(state.api.clone()))
        .layer(middleware::from_fn_with_state(state.access.clone(), access::process_details))
        .layer(middleware::from_fn(auth::json_errors))
        .layer(middleware::from_fn(bodies::reject))
        .layer(middleware::from_fn_with_state(state.access.clone(), auth::basic_auth))
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let collect = || async {
        let body = state.collector.collect().await.map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        Ok(gzip::Exposition::new(body))
    };
    let exposition = match state.scrapes.get(collect).await {
        Ok(e) => e,
        Err(response) => return response,
    };
    gzip::respond(exposition, &headers).await
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    // Loose attachment (as ebpf_exporter): the listener opens only after the attach phase, so serving means ready.
    // A family that could not attach must not hold a rollout back for ever; it is named here, in probe_attached,
    // `check`, /api/v1/status and the log (`--probes.strict` makes it fatal at start instead).
    let missing = state.report.missing_required();
    let body = serde_json::json!({ "ready": true, "required_families_not_attached": missing });
    (StatusCode::OK, Json(body)).into_response()
}

async fn landing(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>mmuscope</title></head><body>\
         <h1>mmuscope</h1><p>Secondary-MMU invalidation metrics for this host (kernel {}).</p>\
         <ul><li><a href=\"{}\">metrics</a></li><li><a href=\"/api/v1/status\">API status</a></li>\
         <li><a href=\"/api/v1/cgroups\">cgroups</a></li><li><a href=\"/api/v1/openapi.json\">OpenAPI document</a></li>\
         <li><a href=\"/healthz\">healthz</a></li><li><a href=\"/readyz\">readyz</a></li></ul></body></html>",
        html_escape(&state.report.kernel_release),
        html_escape(&state.telemetry_path)
    ))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {}", uri.path()))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
