//! gzip for `/metrics` when the request's `Accept-Encoding` allows it (Prometheus always asks). The body is
//! compressed at most once per collection, on first demand, and shared by every request that shares the
//! collection (see [`super::coalesce`]), so ten scrapers cost one compression, and clients that do not ask for
//! gzip cost none.

use std::{io::Write, sync::Arc};

use axum::{
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use tokio::sync::OnceCell;

/// One collection's text exposition, and its gzip form once somebody asked for it.
pub struct Exposition {
    pub plain: Vec<u8>,
    gzip: OnceCell<Bytes>,
}

impl Exposition {
    pub fn new(plain: Vec<u8>) -> Self {
        Self { plain, gzip: OnceCell::new() }
    }

    /// The gzip body, compressed (off the async workers) by the first caller; the others wait for it.
    pub async fn gzip(self: &Arc<Self>) -> Result<Bytes, String> {
        let me = self.clone();
        let body = self
            .gzip
            .get_or_try_init(|| async move {
                let compressed = tokio::task::spawn_blocking(move || compress(&me.plain));
                compressed.await.map_err(|e| e.to_string())?.map(Bytes::from).map_err(|e| e.to_string())
            })
            .await?;
        Ok(body.clone())
    }
}

/// The `/metrics` response for a request with `headers`: gzip if it accepts it, else the shared plain body.
pub async fn respond(exposition: Arc<Exposition>, headers: &HeaderMap) -> Response {
    let content_type = (header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8");
    let vary = (header::VARY, "Accept-Encoding");
    if accepted(headers) {
        match exposition.gzip().await {
            Ok(body) => return ([content_type, vary, (header::CONTENT_ENCODING, "gzip")], body).into_response(),
            Err(e) => tracing::warn!("gzip failed ({e}); sending the exposition uncompressed"),
        }
    }
    let body = axum::body::Body::from(Bytes::from_owner(ArcBody(exposition)));
    ([content_type, vary], body).into_response()
}

/// A shared body, served without copying it per request.
struct ArcBody(Arc<Exposition>);

impl AsRef<[u8]> for ArcBody {
    fn as_ref(&self) -> &[u8] {
        &self.0.plain
    }
}

/// gzip at the fastest level: the exposition is repetitive text that compresses tenfold or more even so, and CPU
/// on the monitored host is what the agent must not waste.
pub fn compress(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 8), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

/// Whether `Accept-Encoding` lists `gzip` (or `x-gzip`, or `*`) with a non-zero quality.
pub fn accepted(headers: &HeaderMap) -> bool {
    let mut star = false;
    for value in headers.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for item in value.split(',') {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match coding.as_str() {
                "gzip" | "x-gzip" => return q > 0.0,
                "*" => star = q > 0.0,
                _ => {}
            }
        }
    }
    star
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use axum::http::HeaderValue;

    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn accept_encoding() {
        // What Prometheus sends.
        assert!(accepted(&with(&["gzip"])));
        assert!(accepted(&with(&["deflate, GZIP;q=0.5"])));
        assert!(accepted(&with(&["identity", "x-gzip"])));
        assert!(accepted(&with(&["br;q=1.0, *;q=0.1"])));
        assert!(!accepted(&with(&[])));
        assert!(!accepted(&with(&["identity"])));
        assert!(!accepted(&with(&["gzip;q=0"])));
        assert!(!accepted(&with(&["gzip;q=0, *"])), "an explicit refusal wins over *");
        assert!(!accepted(&with(&["gzipped"])));
    }

    async fn body(r: Response) -> Vec<u8> {
        axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap().to_vec()
    }

    #[tokio::test]
    async fn responses_say_their_encoding_and_carry_the_same_exposition() {
        let plain = b"# TYPE mmuscope_x counter\nmmuscope_x{cgroup=\"/a\"} 1\n".repeat(100);
        let expo = Arc::new(Exposition::new(plain.clone()));
        let r = respond(expo.clone(), &with(&["gzip, deflate"])).await;
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
        let zipped = body(r).await;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&zipped[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, plain, "decompressed = plain");
        let r = respond(expo, &with(&["identity"])).await;
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; version=0.0.4; charset=utf-8");
        assert_eq!(body(r).await, plain);
    }

    #[tokio::test]
    async fn compressed_once_and_decompresses_to_the_plain_body() {
        let plain: Vec<u8> = (0..2000)
            .map(|i| format!("mmuscope_invalidations_total{{cgroup=\"/c{i}\",event=\"clear\"}} {i}\n"))
            .collect::<String>()
            .into_bytes();
        let expo = Arc::new(Exposition::new(plain.clone()));
        let first = expo.gzip().await.unwrap();
        let second = expo.gzip().await.unwrap();
        assert_eq!(first.as_ptr(), second.as_ptr(), "compressed once, shared");
        assert!(first.len() * 5 < plain.len(), "ratio {} / {}", plain.len(), first.len());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&first[..]).read_to_end(&mut out).unwrap();
        assert_eq!(out, plain);
    }
}
