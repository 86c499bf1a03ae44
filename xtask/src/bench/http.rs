//! A minimal HTTP/1.1 GET over loopback for `/readyz` and `/metrics` (the bench needs no TLS, no keep-alive and no
//! client crate; latency under load is measured by wrk).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result};

/// `GET path` → (status code, body).
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    get_with_timeout(addr, path, Duration::from_secs(30))
}

/// [`get`] for an answer that may take up to `timeout` (a stack capture answers when it ends).
pub fn get_with_timeout(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((code, body))
}
