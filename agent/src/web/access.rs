//! Which endpoints need what, beyond the web config file: `/healthz` and `/readyz` answer without credentials
//! unless `--web.health-requires-auth`; `--web.disable-process-details` closes the endpoints that show processes.
//! Both switches change on SIGHUP ([`Access::set`]).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    extract::{Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
};

use crate::{api::json_error, cli::AccessArgs};

/// Liveness and readiness probes: kubelet and load balancers call them without credentials.
pub const HEALTH_PATHS: &[&str] = &["/healthz", "/readyz"];
/// Endpoints that show pids, process names and cgroups of the workloads.
pub const PROCESS_DETAIL_PATHS: &[&str] = &["/api/v1/subscribers", "/api/v1/slow"];

#[derive(Debug, Default)]
pub struct Access {
    process_details_disabled: AtomicBool,
    health_requires_auth: AtomicBool,
}

impl Access {
    pub fn new(args: &AccessArgs) -> Self {
        let access = Self::default();
        access.set(args);
        access
    }

    pub fn set(&self, args: &AccessArgs) {
        self.process_details_disabled.store(args.disable_process_details, Ordering::Relaxed);
        self.health_requires_auth.store(args.health_requires_auth, Ordering::Relaxed);
    }

    /// Whether `path` is served without the web config's basic-auth credentials.
    pub fn auth_exempt(&self, path: &str) -> bool {
        HEALTH_PATHS.contains(&path) && !self.health_requires_auth.load(Ordering::Relaxed)
    }

    fn refuses(&self, path: &str) -> bool {
        let path = path.strip_suffix('/').filter(|p| !p.is_empty()).unwrap_or(path);
        PROCESS_DETAIL_PATHS.contains(&path) && self.process_details_disabled.load(Ordering::Relaxed)
    }
}

/// 403 with a JSON error on the process-detail endpoints while they are disabled.
pub async fn process_details(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if access.refuses(req.uri().path()) {
        return json_error(
            StatusCode::FORBIDDEN,
            format!("{} is disabled on this agent (--web.disable-process-details)", req.uri().path()),
        );
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches() {
        let a = Access::new(&AccessArgs::default());
        assert!(a.auth_exempt("/healthz") && a.auth_exempt("/readyz"));
        assert!(!a.auth_exempt("/metrics") && !a.auth_exempt("/healthz/x"));
        assert!(!a.refuses("/api/v1/slow"));
        a.set(&AccessArgs { disable_process_details: true, health_requires_auth: true });
        assert!(!a.auth_exempt("/healthz"));
        assert!(a.refuses("/api/v1/slow") && a.refuses("/api/v1/subscribers/") && !a.refuses("/api/v1/cgroups"));
    }
}
