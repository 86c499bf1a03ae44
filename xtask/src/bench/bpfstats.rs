//! BPF run-time statistics of one process's programs: `kernel.bpf_stats_enabled` on for a pass, then each program
//! the process holds (its `/proc/<pid>/fdinfo` entries with a `prog_id`) with `run_time_ns` and `run_cnt`, named by
//! `bpftool prog show`, with the tracepoints its links name (`tp_name` in a link's fdinfo: one program may serve
//! several hooks, and the floor's programs share a name).

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
    pub id: u64,
    pub name: String,
    /// Tracepoints its links attach it to (empty where the process holds no link, e.g. bpftrace's perf events).
    pub hooks: Vec<String>,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

impl ProgStat {
    pub fn ns_per_run(&self) -> f64 {
        if self.run_cnt == 0 { 0.0 } else { self.run_time_ns as f64 / self.run_cnt as f64 }
    }

    /// The hooks, for a table cell.
    pub fn hooks_cell(&self) -> String {
        if self.hooks.is_empty() { "—".into() } else { self.hooks.join(" ") }
    }
}

/// The runs between two snapshots of one process's programs (`after` minus `before`, by program id).
pub fn since(before: &[ProgStat], after: &[ProgStat]) -> Vec<ProgStat> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            ProgStat {
                run_cnt: a.run_cnt.saturating_sub(b.map_or(0, |b| b.run_cnt)),
                run_time_ns: a.run_time_ns.saturating_sub(b.map_or(0, |b| b.run_time_ns)),
                ..a.clone()
            }
        })
        .collect()
}

/// The programs `pid` holds, by program id (a program held through several fds appears once).
pub fn of_pid(pid: u32) -> Result<Vec<ProgStat>> {
    let names = names()?;
    let mut by_id = BTreeMap::new();
    let mut hooks: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let text = std::fs::read_to_string(e?.path()).unwrap_or_default();
        let raw = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).map(str::trim);
        let field = |k: &str| raw(k).and_then(|v| v.parse::<u64>().ok());
        if let (Some(id), Some(tp)) = (field("prog_id:"), raw("tp_name:")) {
            hooks.entry(id).or_default().push(tp.to_owned());
        }
        if let (Some(id), Some(cnt), Some(ns)) = (field("prog_id:"), field("run_cnt:"), field("run_time_ns:")) {
            let name = names.get(&id).cloned().unwrap_or_else(|| format!("id {id}"));
            by_id.insert(
                id,
                ProgStat { variant: String::new(), id, name, hooks: vec![], run_cnt: cnt, run_time_ns: ns },
            );
        }
    }
    for (id, p) in &mut by_id {
        p.hooks = hooks.remove(id).unwrap_or_default();
        p.hooks.sort();
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
