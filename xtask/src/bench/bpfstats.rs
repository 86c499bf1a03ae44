//! BPF run-time statistics of one process's programs: `kernel.bpf_stats_enabled` on for a pass, then each program
//! the process holds (its `/proc/<pid>/fdinfo` entries with a `prog_id`) with `run_time_ns` and `run_cnt`, named by
//! `bpftool prog show`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// Turns the statistics on and restores the previous setting on drop.
pub struct Enabled(String);

impl Enabled {
    pub fn new() -> Result<Self> {
        let old = std::fs::read_to_string(SYSCTL).context("reading kernel.bpf_stats_enabled")?;
        std::fs::write(SYSCTL, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self(old.trim().to_owned()))
    }
}

impl Drop for Enabled {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[derive(Debug, Clone)]
pub struct ProgStat {
    /// Which benchmark variant held it (filled in by the caller).
    pub variant: String,
    pub name: String,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl ProgStat {
    pub fn ns_per_run(&self) -> f64 {
        if self.run_cnt == 0 { 0.0 } else { self.run_time_ns as f64 / self.run_cnt as f64 }
    }
}

/// The programs `pid` holds, by program id (a program held through several fds appears once).
pub fn of_pid(pid: u32) -> Result<Vec<ProgStat>> {
    let names = names()?;
    let mut by_id = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).and_then(|v| v.trim().parse::<u64>().ok());
        if let (Some(id), Some(cnt), Some(ns)) = (field("prog_id:"), field("run_cnt:"), field("run_time_ns:")) {
            let name = names.get(&id).cloned().unwrap_or_else(|| format!("id {id}"));
            by_id.insert(id, ProgStat { variant: String::new(), name, run_cnt: cnt, run_time_ns: ns });
        }
    }
    Ok(by_id.into_values().collect())
}

/// Program id → name, from `bpftool prog show -j`.
fn names() -> Result<BTreeMap<u64, String>> {
    let out = std::process::Command::new("bpftool").args(["prog", "show", "-j"]).output().context("bpftool")?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("bpftool prog show -j")?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_u64()?, p["name"].as_str()?.to_owned())))
        .collect())
}
