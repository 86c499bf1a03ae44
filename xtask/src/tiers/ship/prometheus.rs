//! A Prometheus server (Debian package prometheus) on loopback for the tier: scrapes the agent every second,
//! evaluates the shipped rules, answers the dashboards' queries. Backfilled blocks (`promtool tsdb
//! create-blocks-from openmetrics`) are loaded by a restart on a new data directory made of a snapshot of the
//! first one plus those blocks: Prometheus drops head data older than its newest block when it opens a data
//! directory (it assumes its blocks were cut from its head), so blocks next to a live head would lose the head.
//!
//! The `eco` tier has its own helper in the tests crate (one target, instant queries); this one also needs range
//! and label queries, rules and restarts, and xtask does not depend on the tests crate.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::{daemon, daemon::Daemon, http};

pub struct Prometheus {
    daemon: Option<Daemon>,
    addr: SocketAddr,
    dir: PathBuf,
    data: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus in `dir` scraping `target` as job `mmuscope`, instance and node `instance` (the node label
    /// as the ServiceMonitor sets it in Kubernetes), with `rules` loaded.
    pub fn start(dir: &Path, target: SocketAddr, instance: &str, rules: &Path) -> Result<Self> {
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: mmuscope\n    static_configs:\n      - targets: ['{target}']\n        \
             labels:\n          instance: '{instance}'\n          node: '{instance}'\n",
            rules.display()
        );
        fs::write(dir.join("prometheus.yml"), config)?;
        let mut p = Self { daemon: None, addr: daemon::free_port()?, dir: dir.to_path_buf(), data };
        p.launch()?;
        Ok(p)
    }

    /// Starts Prometheus in `dir` with the complete configuration `config` (its own scrape jobs, no rules).
    pub fn start_with_config(dir: &Path, config: &str) -> Result<Self> {
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        fs::write(dir.join("prometheus.yml"), config)?;
        let mut p = Self { daemon: None, addr: daemon::free_port()?, dir: dir.to_path_buf(), data };
        p.launch()?;
        Ok(p)
    }

    fn launch(&mut self) -> Result<()> {
        let mut cmd = Command::new("prometheus");
        cmd.arg(format!("--config.file={}", self.dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.data.display()))
            .arg(format!("--web.listen-address={}", self.addr))
            // For the snapshot in restart_with; loopback only.
            .arg("--web.enable-admin-api")
            .arg("--log.level=warn");
        let mut daemon = Daemon::spawn("prometheus", &mut cmd, &self.dir.join("prometheus.log"))?;
        let url = self.url("/-/ready");
        daemon::wait_for("prometheus ready", Duration::from_secs(30), || {
            daemon.alive()?;
            Ok(http::get(&url, &[]).ok().filter(|(code, _)| *code == 200))
        })?;
        self.daemon = Some(daemon);
        Ok(())
    }

    /// Snapshots the data (head included), stops the server, starts it again on a new data directory holding
    /// the snapshot's blocks and whatever `load` puts there.
    pub fn restart_with(&mut self, load: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let (code, body) = http::post(&self.url("/api/v1/admin/tsdb/snapshot"))?;
        let answer: Value = serde_json::from_str(&body).with_context(|| format!("snapshot: HTTP {code}: {body}"))?;
        let name = answer["data"]["name"].as_str().with_context(|| format!("snapshot: HTTP {code}: {body}"))?;
        let snapshot = self.data.join("snapshots").join(name);
        if let Some(d) = self.daemon.take() {
            d.stop()?;
        }
        let merged = self.dir.join("data-merged");
        let _ = fs::remove_dir_all(&merged);
        fs::rename(&snapshot, &merged).context("moving the snapshot")?;
        load(&merged)?;
        self.data = merged;
        self.launch()
    }

    pub(in crate::tiers) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `data` of a successful API answer; an error with Prometheus' message otherwise (e.g. a parse error).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let (code, body) = http::get(&self.url(path), params)?;
        let v: Value = serde_json::from_str(&body).with_context(|| format!("HTTP {code} from {path}: {body}"))?;
        if v["status"] != "success" {
            bail!("{}: {}", v["errorType"].as_str().unwrap_or("error"), v["error"].as_str().unwrap_or(&body));
        }
        Ok(v["data"].clone())
    }

    /// Instant query at `time` (Unix seconds): `{resultType, result}`.
    pub fn query(&self, expr: &str, time: f64) -> Result<Value> {
        self.api("/api/v1/query", &[("query", expr), ("time", &format!("{time:.3}"))])
    }

    pub fn query_range(&self, expr: &str, start: f64, end: f64, step: f64) -> Result<Value> {
        let (start, end, step) = (format!("{start:.3}"), format!("{end:.3}"), format!("{step}"));
        self.api("/api/v1/query_range", &[("query", expr), ("start", &start), ("end", &end), ("step", &step)])
    }

    /// What a Grafana `label_values(selector, label)` variable offers over [start, end].
    pub fn label_values(&self, selector: &str, label: &str, start: f64, end: f64) -> Result<Vec<String>> {
        let (start, end) = (format!("{start:.3}"), format!("{end:.3}"));
        let data = self.api(
            &format!("/api/v1/label/{label}/values"),
            &[("match[]", selector), ("start", &start), ("end", &end)],
        )?;
        Ok(data.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect())
    }
}
