//! `wrk` (Debian package) as a background load: N connections on one URL for a fixed time, and its summary.

use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// What wrk reports at the end.
#[derive(Debug, Default)]
pub struct Summary {
    pub requests: u64,
    /// connect, read, write, timeout errors (wrk's "Socket errors").
    pub socket_errors: [u64; 4],
    /// wrk's "Non-2xx or 3xx responses".
    pub non_2xx: u64,
    pub raw: String,
}

/// A running wrk; killed when dropped, so a failing test does not leave it hammering the port.
pub struct Load {
    child: Option<Child>,
    url: String,
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Load {
    /// `wrk -t2 -c<connections> -d<seconds>s --timeout 30s <url>`, started now.
    pub fn start(url: &str, connections: u32, seconds: u32) -> Result<Self> {
        let child = Command::new("wrk")
            .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s"), "--timeout", "30s", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting wrk (Debian package wrk; `cargo xtask setup` installs it)")?;
        Ok(Self { child: Some(child), url: url.to_owned() })
    }

    /// Ends the load early (its summary is not needed).
    pub fn stop(self) {
        drop(self);
    }

    pub fn finish(mut self) -> Result<Summary> {
        let out = self.child.take().expect("wrk child").wait_with_output()?;
        let raw = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!("wrk {} failed ({}): {raw}{}", self.url, out.status, String::from_utf8_lossy(&out.stderr));
        }
        parse(&raw)
    }
}

fn parse(raw: &str) -> Result<Summary> {
    let mut s = Summary { raw: raw.to_owned(), ..Default::default() };
    let num = |t: &str| t.trim_matches(|c: char| !c.is_ascii_digit()).parse::<u64>().unwrap_or(0);
    for line in raw.lines().map(str::trim) {
        if line.contains(" requests in ") {
            s.requests = num(line.split_whitespace().next().unwrap_or_default());
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for (i, part) in rest.split(',').enumerate().take(4) {
                s.socket_errors[i] = num(part.split_whitespace().last().unwrap_or_default());
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx = num(rest);
        }
    }
    if s.requests == 0 {
        bail!("wrk made no requests: {raw}");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_summary() {
        let raw = "Running 10s test @ http://x/metrics\n  2 threads and 100 connections\n  \
                   5208 requests in 10.01s, 1.20GB read\n  Socket errors: connect 0, read 3, write 0, timeout 7\n  \
                   Non-2xx or 3xx responses: 12\nRequests/sec:    520.31\n";
        let s = parse(raw).unwrap();
        assert_eq!((s.requests, s.socket_errors, s.non_2xx), (5208, [0, 3, 0, 7], 12));
        assert!(parse("nothing").is_err());
    }
}
