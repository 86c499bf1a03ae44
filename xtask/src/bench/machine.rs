//! The machine a result was measured on: CPU model, cores, kernel, and the load average around the run (other jobs
//! on a shared machine make every figure noisier; the report says how busy it was).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    /// 1/5/15-minute load averages when the benchmark started and when it ended.
    pub load_before: String,
    pub load_after: String,
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
        Self { cpu, cores, kernel, load_before: load(), load_after: String::new() }
    }

    pub fn finish(&mut self) {
        self.load_after = load();
    }

    pub fn describe(&self) -> String {
        format!(
            "{} × {}, kernel {}; load average (1/5/15 min) {} before, {} after",
            self.cores, self.cpu, self.kernel, self.load_before, self.load_after
        )
    }
}

/// The first three fields of /proc/loadavg.
fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
