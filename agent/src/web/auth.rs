//! Per-request checks from the connection's web configuration: `rate_limit`, basic auth (`basic_auth_users`, except
//! on `basic_auth_excluded_paths` and, unless `--web.health-requires-auth`, `/healthz` and `/readyz`) and the
//! configured response headers; plus turning any non-JSON error response (axum's own 405, rejections) into
//! `{"error": ...}`.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;

use super::access::Access;
use crate::{api::json_error, webconfig::WebConfig};

/// Applies the rate limit; requires valid basic-auth credentials when users are configured (except on exempt
/// paths); adds the configured headers.
pub async fn basic_auth(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let Some(config) = req.extensions().get::<Arc<WebConfig>>().cloned() else {
        return next.run(req).await;
    };
    if config.rate_limit.as_ref().is_some_and(|l| !l.allow()) {
        let r = json_error(StatusCode::TOO_MANY_REQUESTS, "too many requests (rate_limit of the web config)");
        return with_headers(r, &config);
    }
    let path = req.uri().path();
    let exempt = access.auth_exempt(path) || config.auth_excluded.iter().any(|p| p == path);
    if !config.users.is_empty() && !exempt {
        let creds = req.headers().get(header::AUTHORIZATION).and_then(|v| parse_basic(v.as_bytes()));
        let ok = match creds {
            Some((user, password)) => {
                let c = config.clone();
                tokio::task::spawn_blocking(move || c.users.check(&user, &password)).await.unwrap_or(false)
            }
            None => false,
        };
        if !ok {
            let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized: valid basic-auth credentials required");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"mmuscope\""));
            return with_headers(r, &config);
        }
    }
    with_headers(next.run(req).await, &config)
}

fn with_headers(mut r: Response, config: &WebConfig) -> Response {
    for (n, v) in &config.headers {
        r.headers_mut().insert(n.clone(), v.clone());
    }
    r
}

/// `Basic base64(user:password)` → (user, password).
fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let v = std::str::from_utf8(value).ok()?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Error responses that are not JSON yet (axum's 405, 404 from nested routers, extractor rejections) get a JSON
/// body; their headers (e.g. `Allow`) stay.
pub async fn json_errors(req: Request, next: Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let is_json = r.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, _) = r.into_parts();
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut fresh = json_error(status, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (n, v) in parts.headers.iter() {
        fresh.headers_mut().insert(n.clone(), v.clone());
    }
    fresh
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, path::Path};

    use axum::{Router, body::Body, middleware, routing::get};
    use tower::ServiceExt;

    use super::*;
    use crate::{
        cli::AccessArgs,
        webconfig::{
            RateLimiter, Users,
            file::{GoDuration, RateLimitConfig},
        },
    };

    /// One request through the middleware in front of three trivial routes, as the connection's `config` sees it.
    async fn status(config: &Arc<WebConfig>, access: &Arc<Access>, path: &str, creds: Option<&str>) -> StatusCode {
        let ok = || async { "ok" };
        let app = Router::new()
            .route("/healthz", get(ok))
            .route("/readyz", get(ok))
            .route("/metrics", get(ok))
            .layer(middleware::from_fn_with_state(access.clone(), basic_auth));
        let mut req = Request::builder().uri(path);
        if let Some(c) = creds {
            let b64 = base64::engine::general_purpose::STANDARD.encode(c);
            req = req.header(header::AUTHORIZATION, format!("Basic {b64}"));
        }
        let mut req = req.body(Body::empty()).unwrap();
        req.extensions_mut().insert(config.clone());
        let r = app.oneshot(req).await.unwrap();
        if let Some((name, value)) = config.headers.first() {
            assert_eq!(r.headers().get(name), Some(value), "configured headers on every response");
        }
        r.status()
    }

    fn users() -> Users {
        let hash = bcrypt::hash("s3cret", 4).unwrap();
        Users::new(Path::new("web.yml"), &BTreeMap::from([("alice".to_string(), hash)])).unwrap()
    }

    #[tokio::test]
    async fn health_probes_answer_without_credentials_unless_asked_to() {
        let nosniff = (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        let config = Arc::new(WebConfig { users: users(), headers: vec![nosniff], ..Default::default() });
        let open = Arc::new(Access::new(&AccessArgs::default()));
        for (path, creds, want) in [
            ("/healthz", None, StatusCode::OK),
            ("/readyz", None, StatusCode::OK),
            ("/metrics", None, StatusCode::UNAUTHORIZED),
            ("/metrics", Some("alice:wrong"), StatusCode::UNAUTHORIZED),
            ("/metrics", Some("alice:s3cret"), StatusCode::OK),
        ] {
            assert_eq!(status(&config, &open, path, creds).await, want, "{path} {creds:?}");
        }
        let closed = Arc::new(Access::new(&AccessArgs { health_requires_auth: true, ..Default::default() }));
        assert_eq!(status(&config, &closed, "/healthz", None).await, StatusCode::UNAUTHORIZED);
        assert_eq!(status(&config, &closed, "/readyz", Some("alice:s3cret")).await, StatusCode::OK);
        // exporter-toolkit's basic_auth_excluded_paths.
        let excluded =
            Arc::new(WebConfig { users: users(), auth_excluded: vec!["/metrics".into()], ..Default::default() });
        assert_eq!(status(&excluded, &closed, "/metrics", None).await, StatusCode::OK);
    }

    #[tokio::test]
    async fn rate_limit_answers_429_once_the_burst_is_spent() {
        let limit = RateLimitConfig { interval: Some(GoDuration::Text("1h".into())), burst: Some(2) };
        let rate_limit = RateLimiter::new(Path::new("web.yml"), &limit).unwrap();
        let config = Arc::new(WebConfig { rate_limit, ..Default::default() });
        let access = Arc::new(Access::new(&AccessArgs::default()));
        assert_eq!(status(&config, &access, "/metrics", None).await, StatusCode::OK);
        assert_eq!(status(&config, &access, "/healthz", None).await, StatusCode::OK);
        assert_eq!(status(&config, &access, "/metrics", None).await, StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn basic_header() {
        assert_eq!(parse_basic(b"Basic YWxpY2U6czNjOnJldA=="), Some(("alice".into(), "s3c:ret".into())));
        assert_eq!(parse_basic(b"basic YWxpY2U6"), Some(("alice".into(), "".into())));
        assert_eq!(parse_basic(b"Bearer x"), None);
        assert_eq!(parse_basic(b"Basic !!!"), None);
        assert_eq!(parse_basic(b"Basic YWxpY2U="), None);
        assert_eq!(parse_basic(&[0xff, 0xfe]), None);
    }
}
