//! The result lines the xtask tier reads: `MMUSCOPE-GUEST-RESULT {json}`, one JSON object per line with a `kind`
//! of `check`, `scenario` or `error`. The xtask side (`xtask/src/vm/results.rs`) mirrors these fields; add fields,
//! never rename them.

use std::collections::BTreeMap;

use serde::Serialize;

/// Prefix of every result line.
pub const PREFIX: &str = "MMUSCOPE-GUEST-RESULT ";

/// Counts per `event` label value.
pub type EventCounts = BTreeMap<String, i64>;

/// One series group compared with the ground truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// `metric{cgroup="…",label="…"}`: the labels selected; the increase is summed over all others.
    pub series: String,
    /// Exactly this, or the lower bound when `expected_max` is set.
    pub expected: u64,
    /// The truth's upper bound where the exact figure cannot be known (its source says why); `None`: exact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_max: Option<u64>,
    /// Signed: a counter that went down shows as a negative increase.
    pub observed: i64,
    pub pass: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// A few records per guest run, printed once: their size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    /// `mmuscope check --json --mode M`.
    Check {
        kernel_release: String,
        mode: String,
        /// What `check` reported (None if it did not run or said nothing).
        generation: Option<String>,
        expected_generation: String,
        /// Mode of the `brackets` alternative that attached.
        attached_mode: Option<String>,
        /// Other families with nothing attached in this mode (`name (required): reason`); informational.
        families_not_attached: Vec<String>,
        /// Families the plan without `--probes.keep-attached` must report off in this mode on this kernel (their
        /// on-demand hooks cannot be attached on demand; `problems` says where it did not); the check above and the
        /// agent ran with the flag.
        off_without_keep_attached: Vec<String>,
        pass: bool,
        problems: Vec<String>,
    },
    /// One workload run compared with the agent's counters.
    Scenario {
        kernel_release: String,
        mode: String,
        scenario: String,
        args: Vec<String>,
        /// Wall time of the comparison (workload, settling, quiet period), under TCG.
        seconds: f64,
        /// The attribution cgroup's path (the `cgroup` label).
        cgroup: String,
        /// The secondary-TLB API whose expectations were applied (`invalidate_range`, `arch_invalidate_secondary_tlbs`).
        kernel_api: String,
        /// Every family the truth describes for this kernel and mode, expected vs observed (the brackets' three
        /// fields below repeat part of it for the README table).
        comparisons: Vec<Comparison>,
        /// Parts of the truth not observable in this mode (not asserted).
        notes: Vec<String>,
        /// Series of the compared families that grew where the truth makes no statement (not asserted).
        unasserted: Vec<String>,
        /// Ground truth: brackets per event.
        expected: EventCounts,
        /// `mmuscope_invalidations_total` increase for the cgroup, per event (summed over the other labels).
        observed: EventCounts,
        /// `mmuscope_invalidation_duration_seconds_count` increase for the cgroup, per event.
        hist_count: EventCounts,
        /// Increases of other cgroups during the run (diagnostics, not asserted).
        other_cgroups: BTreeMap<String, EventCounts>,
        /// `(truth, observed)` KVM `invalidate_range_start` callbacks timed (fentry/kprobe modes).
        #[serde(skip_serializing_if = "Option::is_none")]
        kvm_start_callbacks: Option<(u64, u64)>,
        /// `/api/v1/subscribers` for the held workload's pid (`kvm-madvise` in fentry/kprobe modes).
        #[serde(skip_serializing_if = "Option::is_none")]
        subscribers: Option<crate::subscribers::Listed>,
        pass: bool,
        problems: Vec<String>,
    },
    /// A step that failed before anything could be compared.
    Error { kernel_release: String, mode: String, stage: String, message: String },
}

impl Record {
    pub fn error(kernel: &str, mode: &str, stage: &str, message: String) -> Self {
        Record::Error { kernel_release: kernel.to_owned(), mode: mode.to_owned(), stage: stage.to_owned(), message }
    }

    pub fn passed(&self) -> bool {
        match self {
            Record::Check { pass, .. } | Record::Scenario { pass, .. } => *pass,
            Record::Error { .. } => false,
        }
    }

    /// Prints the human summary and the machine line.
    pub fn print(&self) {
        match self {
            Record::Check {
                mode,
                generation,
                attached_mode,
                families_not_attached,
                off_without_keep_attached,
                problems,
                ..
            } => {
                println!(
                    "check --mode {mode}: generation {}, brackets attached in {} mode{}",
                    generation.as_deref().unwrap_or("?"),
                    attached_mode.as_deref().unwrap_or("no"),
                    verdict(problems)
                );
                for f in families_not_attached {
                    println!("  note: not attached in {mode} mode: {f}");
                }
                if !off_without_keep_attached.is_empty() {
                    println!(
                        "  off by default in {mode} mode: {}; checked and run with {}",
                        off_without_keep_attached.join(", "),
                        crate::plan::KEEP_ATTACHED
                    );
                }
            }
            Record::Scenario {
                mode,
                scenario,
                cgroup,
                kernel_api,
                comparisons,
                notes,
                unasserted,
                problems,
                seconds,
                kvm_start_callbacks,
                subscribers,
                ..
            } => {
                println!("{mode} {scenario}: cgroup {cgroup}, {kernel_api}, {seconds:.1} s{}", verdict(problems));
                if let Some((truth, timed)) = kvm_start_callbacks {
                    println!("  kvm invalidate_range_start callbacks timed: expected {truth}, observed {timed}");
                }
                if let Some(listed) = subscribers {
                    println!("  subscribers listed for the held workload: {listed:?}");
                }
                for c in comparisons {
                    let mark = if c.pass { "ok  " } else { "FAIL" };
                    let wanted = match c.expected_max {
                        Some(max) => format!("{}..={max}", c.expected),
                        None => c.expected.to_string(),
                    };
                    println!("  {mark} {}: expected {wanted}, observed {}", c.series, c.observed);
                }
                for n in notes {
                    println!("  note: {n}");
                }
                for u in unasserted {
                    println!("  not asserted (the truth leaves it open): {u}");
                }
            }
            Record::Error { mode, stage, message, .. } => println!("{mode}: {stage} FAILED: {message}"),
        }
        println!("{PREFIX}{}", serde_json::to_string(self).expect("records serialise"));
    }
}

fn verdict(problems: &[String]) -> String {
    if problems.is_empty() { ": pass".to_owned() } else { format!(": FAIL: {}", problems.join("; ")) }
}
