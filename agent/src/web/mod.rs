//! The HTTP surface: `/metrics` (text exposition), `/healthz`, `/readyz`, and a small landing
//! page. Read-only; bad paths get a JSON 404.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{
    Json, Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::sync::watch;

use crate::probes::PlanReport;

pub struct AppState {
    pub registry: Registry,
    pub report: PlanReport,
    pub telemetry_path: String,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(landing))
        .route(&state.telemetry_path, get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

/// Binds every address first (so a bad one fails start-up before anything is served), then
/// serves until `shutdown` flips to true.
pub async fn serve(addrs: &[SocketAddr], state: Arc<AppState>, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in addrs {
        let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        tracing::info!("listening on http://{}", l.local_addr()?);
        listeners.push(l);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let app = router(state.clone());
        let mut rx = shutdown.clone();
        tasks.spawn(async move {
            axum::serve(l, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
        });
    }
    while let Some(res) = tasks.join_next().await {
        res.context("HTTP server task panicked")?.context("HTTP server failed")?;
    }
    Ok(())
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Map reads are syscalls: keep them off the async workers.
    let result = tokio::task::spawn_blocking(move || {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&state.registry.gather(), &mut buf).map(|()| buf)
    })
    .await;
    match result {
        Ok(Ok(body)) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("encoding metrics failed: {e}")),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &format!("collector failed: {e}")),
    }
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let missing: Vec<&str> = state.report.families.iter().filter(|f| f.attached().is_none()).map(|f| f.name).collect();
    if missing.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let body = serde_json::json!({ "ready": false, "families_not_attached": missing });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn landing(State(state): State<Arc<AppState>>) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><title>mmuscope</title></head><body>\
         <h1>mmuscope</h1><p>Secondary-MMU invalidation metrics for this host (kernel {}).</p>\
         <ul><li><a href=\"{}\">metrics</a></li><li><a href=\"/healthz\">healthz</a></li>\
         <li><a href=\"/readyz\">readyz</a></li></ul></body></html>",
        html_escape(&state.report.kernel_release),
        html_escape(&state.telemetry_path)
    ))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    error(StatusCode::NOT_FOUND, &format!("no such endpoint: {}", uri.path()))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
