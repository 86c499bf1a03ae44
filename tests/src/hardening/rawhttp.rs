//! HTTP/1.1 requests written byte by byte, for what a well-behaved client library will not send (oversized heads,
//! bodies on GET, malformed request lines), and the response read back as status + body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Response {
    /// The body parsed as JSON with a string `error` member (what every error from the agent's own handlers is).
    pub fn json_error(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(&self.body).ok()?;
        v.get("error")?.as_str().map(str::to_owned)
    }
}

/// Sends `head` (request line and headers, without the final blank line), then `body` (if any), with
/// `Connection: close`, and reads the whole response. A server that answers before reading everything and closes
/// may reset the rest of the upload; the response read before that counts.
pub fn request(addr: SocketAddr, head: &str, body: &[u8]) -> Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    let head = format!("{head}\r\nConnection: close\r\n\r\n");
    // Write errors (EPIPE/ECONNRESET once the server has answered and closed) are expected for oversized requests.
    if s.write_all(head.as_bytes()).is_ok() && !body.is_empty() {
        let _ = s.write_all(body);
    }
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw)
        && raw.is_empty()
    {
        return Err(e).context("reading the response");
    }
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<Response> {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("no complete response head in {text:?}") };
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned());
    // Our responses are small and not chunked when Connection: close… except axum's streamed bodies; de-chunk.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    Ok(Response { status, content_type, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse(b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\r\n{\"error\":\"x\"}").unwrap();
        assert_eq!(
            (r.status, r.content_type.as_deref(), r.json_error().as_deref()),
            (404, Some("application/json"), Some("x"))
        );
        let r =
            parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.body, "abcde");
        assert!(parse(b"HTTP/1.1 200").is_err());
    }
}
