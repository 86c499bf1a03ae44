//! A real Prometheus server on loopback scraping one target every second, and `promtool check metrics`.

use std::{
    io::Write,
    net::{SocketAddr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::tools;

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
    http: ureq::Agent,
}

impl Prometheus {
    /// Starts `prometheus` scraping `target` (job `mmuscope`) and waits until it is ready.
    pub fn start(target: SocketAddr) -> Result<Self> {
        let bin = tools::require(&[("prometheus", "MMUSCOPE_PROMETHEUS")])?.remove(0);
        let dir = tools::scratch_dir("prometheus")?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: mmuscope\n    \
                 scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut p = Self { child, addr, dir, http };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = p.child.try_wait()? {
                bail!("prometheus exited with {status} before it was ready");
            }
            if p.get("/-/ready").is_ok_and(|(code, _)| code == 200) {
                return Ok(p);
            }
            if Instant::now() >= deadline {
                bail!("prometheus not ready within 20 s");
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("http://{}{path}", self.addr);
        let mut r = self.http.get(&url).call().with_context(|| format!("GET {url}"))?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string()?))
    }

    /// An instant query: `(labels, value)` per series of the vector result.
    pub fn query(&self, expr: &str) -> Result<Vec<(serde_json::Map<String, Value>, f64)>> {
        let (code, body) = self.get(&format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("query {expr}: {body}"))?;
        if code != 200 || v["status"] != "success" {
            bail!("query {expr}: HTTP {code}: {body}");
        }
        let mut out = Vec::new();
        for s in v["data"]["result"].as_array().into_iter().flatten() {
            let value: f64 = s["value"][1].as_str().unwrap_or("NaN").parse().unwrap_or(f64::NAN);
            out.push((s["metric"].as_object().cloned().unwrap_or_default(), value));
        }
        Ok(out)
    }

    /// Polls `expr` (a single-series instant query) until `pred` holds on its value or `timeout` passes; returns the
    /// last value seen (`None`: no series).
    pub fn wait_for(&self, expr: &str, timeout: Duration, pred: impl Fn(f64) -> bool) -> Result<Option<f64>> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr)?;
            let v = r.first().map(|(_, v)| *v);
            if v.is_some_and(&pred) || Instant::now() >= deadline {
                return Ok(v);
            }
            thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `promtool check metrics` on an exposition: `Ok(output)` when clean (exit 0), else an error with its findings.
pub fn promtool_check_metrics(exposition: &str) -> Result<String> {
    let bin = tools::require(&[("promtool", "MMUSCOPE_PROMTOOL")])?.remove(0);
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stdin = child.stdin.take().context("promtool stdin")?;
    let text = exposition.to_string();
    let writer = thread::spawn(move || stdin.write_all(text.as_bytes()));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("promtool check metrics failed ({}):\n{report}", out.status);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_promql() {
        assert_eq!(super::encode("sum(x{a=\"/b c\"})"), "sum%28x%7Ba%3D%22%2Fb%20c%22%7D%29");
    }
}
