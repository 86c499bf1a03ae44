//! Every endpoint is a read-only GET: a request that carries a body (of any size) is refused with 413 before
//! anything reads it, so a large upload costs the agent nothing but the headers.

use axum::{
    extract::Request,
    http::{StatusCode, header},
    middleware::Next,
    response::Response,
};

use crate::api::json_error;

pub async fn reject(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).map(str::trim);
    let has_body = headers.contains_key(header::TRANSFER_ENCODING) || length.is_some_and(|l| l != "0");
    if has_body {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "request bodies are not accepted: every endpoint is a GET");
    }
    next.run(req).await
}
