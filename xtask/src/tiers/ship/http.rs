//! HTTP GETs on loopback through curl (Debian package curl), so xtask needs no HTTP client crate.

use std::process::Command;

use anyhow::{Result, bail};

use crate::process;

/// GETs `url` with `params` URL-encoded into the query string; returns (status, body). Connection failures are
/// errors, HTTP error statuses are not.
pub fn get(url: &str, params: &[(&str, &str)]) -> Result<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-G", "--max-time", "20", "-w", "\n%{http_code}"]);
    for (key, value) in params {
        cmd.arg("--data-urlencode").arg(format!("{key}={value}"));
    }
    cmd.arg(url);
    let out = process::capture(&mut cmd)?;
    if !out.status.success() {
        bail!("curl {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}

/// GET that must answer 200.
pub fn get_ok(url: &str) -> Result<String> {
    match get(url, &[])? {
        (200, body) => Ok(body),
        (code, body) => bail!("GET {url}: HTTP {code}: {}", body.trim()),
    }
}

/// POST without a body; returns (status, body).
pub fn post(url: &str) -> Result<(u16, String)> {
    let out = process::capture(Command::new("curl").args([
        "-sS",
        "-X",
        "POST",
        "--max-time",
        "60",
        "-w",
        "\n%{http_code}",
        url,
    ]))?;
    if !out.status.success() {
        bail!("curl -X POST {url}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Ok((code.trim().parse().unwrap_or(0), body.to_string()))
}
