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
    use super::*;

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
