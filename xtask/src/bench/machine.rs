//! The machine a result was measured on: CPU model, cores, kernel, and the load average around the run (other jobs
//! on a shared machine make every figure noisier; the report says how busy it was), and the tracing eBPF programs
//! other jobs had loaded (another agent or bpftrace on the same hooks makes `none` no longer nothing).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    /// 1/5/15-minute load averages when the benchmark started and when it ended.
    pub load_before: String,
    pub load_after: String,
    /// Tracing eBPF programs loaded on the host when the benchmark started and when it ended (none of the
    /// benchmark's own are loaded at either point).
    pub foreign_bpf_before: String,
    pub foreign_bpf_after: String,
}

impl Machine {
    pub fn now() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim()))
            .unwrap_or("unknown")
            .to_owned();
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        Self {
            cpu,
            cores,
            kernel,
            load_before: load(),
            load_after: String::new(),
            foreign_bpf_before: describe_programs(&tracing_programs()),
            foreign_bpf_after: String::new(),
        }
    }

    pub fn finish(&mut self) {
        self.load_after = load();
        self.foreign_bpf_after = describe_programs(&tracing_programs());
    }

    pub fn describe(&self) -> String {
        format!(
            "{} × {}, kernel {}; load average (1/5/15 min) {} before, {} after; other tracing eBPF programs on the \
             host: {} before, {} after",
            self.cores,
            self.cpu,
            self.kernel,
            self.load_before,
            self.load_after,
            self.foreign_bpf_before,
            self.foreign_bpf_after
        )
    }
}

/// The first three fields of /proc/loadavg.
fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The names of the tracing-type eBPF programs loaded on the host (`bpftool prog show`); `None` if bpftool failed.
pub fn tracing_programs() -> Option<Vec<String>> {
    const TYPES: [&str; 5] = ["tracing", "tracepoint", "raw_tracepoint", "kprobe", "perf_event"];
    let out = std::process::Command::new("bpftool").args(["prog", "show", "-j"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let programs = v.as_array()?.iter().filter(|p| p["type"].as_str().is_some_and(|t| TYPES.contains(&t)));
    Some(programs.filter_map(|p| p["name"].as_str().map(str::to_owned)).collect())
}

/// `none`, `N (name, …)` or `unknown`.
fn describe_programs(programs: &Option<Vec<String>>) -> String {
    match programs {
        None => "unknown (bpftool failed)".into(),
        Some(p) if p.is_empty() => "none".into(),
        Some(p) => format!("{} ({})", p.len(), p.join(", ")),
    }
}
