//! Results of the kernel matrix: the records the guest checker prints (`MMUSCOPE-GUEST-RESULT
//! {json}` lines from `tests/src/bin/mmuscope-guest-check/record.rs`, mirrored here field for
//! field) and `target/vm/results.json`, which the VM tier writes and `cargo xtask vm table` reads.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::kernels::CachedKernel;
use crate::workspace::Workspace;

/// Prefix of the guest checker's result lines.
pub const RECORD_PREFIX: &str = "MMUSCOPE-GUEST-RESULT ";
pub const SCHEMA_VERSION: u32 = 1;

pub type EventCounts = BTreeMap<String, i64>;

/// One series group the guest compared with the ground truth.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// `metric{cgroup="…",label="…"}`.
    pub series: String,
    /// Exactly this, or the lower bound when `expected_max` is set.
    pub expected: u64,
    /// The truth's upper bound where the exact figure cannot be known; `None`: exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_max: Option<u64>,
    /// Signed: a counter that went down shows as a negative increase.
    pub observed: i64,
    pub pass: bool,
}

impl Comparison {
    /// `7`, or `0..=1` for a bound.
    pub fn wanted(&self) -> String {
        match self.expected_max {
            Some(max) => format!("{}..={max}", self.expected),
            None => self.expected.to_string(),
        }
    }

    /// Whether `observed` is what the truth wants (re-checked here, not taken from the guest's `pass`).
    pub fn holds(&self) -> bool {
        let max = self.expected_max.unwrap_or(self.expected);
        (i128::from(self.expected)..=i128::from(max)).contains(&i128::from(self.observed))
    }
}

/// One line of the guest checker.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestRecord {
    Check(CheckRecord),
    Scenario(ScenarioRecord),
    Error(ErrorRecord),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CheckRecord {
    pub kernel_release: String,
    pub mode: String,
    pub generation: Option<String>,
    pub expected_generation: String,
    pub attached_mode: Option<String>,
    /// Other families with nothing attached in this mode (informational).
    #[serde(default)]
    pub families_not_attached: Vec<String>,
    pub pass: bool,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioRecord {
    pub kernel_release: String,
    pub mode: String,
    pub scenario: String,
    pub args: Vec<String>,
    /// Wall time of the comparison in the guest.
    #[serde(default)]
    pub seconds: f64,
    pub cgroup: String,
    /// The secondary-TLB API whose expectations the guest applied.
    #[serde(default)]
    pub kernel_api: String,
    /// Every family compared, expected vs observed (absent in results from before they were compared).
    #[serde(default)]
    pub comparisons: Vec<Comparison>,
    /// Parts of the truth not observable in the mode (not asserted).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Series that grew where the truth makes no statement (diagnostics, not asserted).
    #[serde(default)]
    pub unasserted: Vec<String>,
    pub expected: EventCounts,
    pub observed: EventCounts,
    pub hist_count: EventCounts,
    #[serde(default)]
    pub other_cgroups: BTreeMap<String, EventCounts>,
    pub pass: bool,
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub kernel_release: String,
    pub mode: String,
    pub stage: String,
    pub message: String,
}

/// The result lines in a guest's output; a malformed one is an error naming it.
pub fn parse_records(output: &str) -> Result<Vec<GuestRecord>> {
    output
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(RECORD_PREFIX))
        .map(|json| serde_json::from_str(json).with_context(|| format!("malformed guest result line: {json}")))
        .collect()
}

/// `target/vm/results.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Results {
    pub schema_version: u32,
    /// Unix seconds when the tier finished.
    pub finished_at: u64,
    pub wall_seconds: f64,
    pub runs: Vec<RunResult>,
    /// Kernels of the matrix that could not be fetched, and what apt said.
    pub unavailable: Vec<Unavailable>,
}

/// One boot: a kernel in one mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub kernel: KernelInfo,
    pub mode: String,
    pub wall_seconds: f64,
    pub check: Option<CheckRecord>,
    pub scenarios: Vec<ScenarioRecord>,
    /// What went wrong outside the comparisons (boot, agent start, checker exit status).
    pub errors: Vec<String>,
    /// What happened without failing the run (e.g. a retried boot).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl RunResult {
    pub fn passed(&self) -> bool {
        self.errors.is_empty()
            && self.check.as_ref().is_some_and(|c| c.pass)
            && !self.scenarios.is_empty()
            && self.scenarios.iter().all(|s| s.pass)
    }

    /// Every failure of this run, one line each, naming kernel and mode.
    pub fn failures(&self) -> Vec<String> {
        let who = format!("{} {}", self.kernel.release, self.mode);
        let mut out: Vec<String> = self.errors.iter().map(|e| format!("{who}: {e}")).collect();
        match &self.check {
            Some(c) => out.extend(c.problems.iter().map(|p| format!("{who}: check: {p}"))),
            None if self.errors.is_empty() => out.push(format!("{who}: no check result")),
            None => {}
        }
        for s in &self.scenarios {
            out.extend(s.problems.iter().map(|p| format!("{who} {}: {p}", s.scenario)));
        }
        if self.scenarios.is_empty() && self.errors.is_empty() {
            out.push(format!("{who}: no scenario result"));
        }
        out
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KernelInfo {
    pub release: String,
    pub series: String,
    pub package: String,
    pub version: String,
    pub suite: String,
}

impl From<&CachedKernel> for KernelInfo {
    fn from(k: &CachedKernel) -> Self {
        KernelInfo {
            release: k.meta.release.clone(),
            series: k.meta.series.clone(),
            package: k.meta.package.clone(),
            version: k.meta.version.clone(),
            suite: k.meta.suite.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unavailable {
    /// The request, e.g. `sid`.
    pub kernel: String,
    pub reason: String,
}

/// The full matrix's results, which the tested-kernels table is made from.
pub fn path(ws: &Workspace) -> PathBuf {
    ws.target_dir().join("vm/results.json")
}

/// Results of a run with `MMUSCOPE_VM_*` overrides (a subset, or a deliberate mistake).
pub fn custom_path(ws: &Workspace) -> PathBuf {
    ws.target_dir().join("vm/results-custom.json")
}

impl Results {
    pub fn write(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path.parent().context("results path without a directory")?)?;
        fs::write(path, serde_json::to_string_pretty(self)? + "\n")
            .with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(ws: &Workspace) -> Result<Self> {
        let path = path(ws);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("reading {} (run `cargo xtask test --tier vm` first)", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_lines_parse() {
        let out = "noise\r\n\
            MMUSCOPE-GUEST-RESULT {\"kind\":\"check\",\"kernel_release\":\"6.1.0-56-amd64\",\"mode\":\"fentry\",\
            \"generation\":\"invalidate_range\",\"expected_generation\":\"invalidate_range\",\"attached_mode\":\"fentry\",\
            \"pass\":true,\"problems\":[]}\r\n\
            MMUSCOPE-GUEST-RESULT {\"kind\":\"scenario\",\"kernel_release\":\"6.1.0-56-amd64\",\"mode\":\"fentry\",\
            \"scenario\":\"kvm-madvise\",\"args\":[\"kvm-madvise\"],\"cgroup\":\"/t\",\"expected\":{\"clear\":1000},\
            \"observed\":{\"clear\":1000,\"unmap\":2},\"hist_count\":{\"clear\":1000},\"other_cgroups\":{},\
            \"pass\":false,\"problems\":[\"x\"]}\n\
            MMUSCOPE-GUEST-RESULT {\"kind\":\"error\",\"kernel_release\":\"k\",\"mode\":\"kprobe\",\"stage\":\"agent start\",\"message\":\"m\"}\n";
        let records = parse_records(out).unwrap();
        assert_eq!(records.len(), 3);
        let GuestRecord::Scenario(s) = &records[1] else { panic!("not a scenario") };
        assert_eq!(s.observed["unmap"], 2);
        assert!(parse_records("MMUSCOPE-GUEST-RESULT {oops\n").is_err());
    }
}
