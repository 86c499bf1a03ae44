//! The table `cargo xtask test` ends with, and its closing line `N passed, N failed`.

use std::{fmt::Write, time::Duration};

use crate::progress;

/// How a tier ended.
pub enum Verdict {
    Passed,
    /// The error, or why it was not run (e.g. the build failed).
    Failed(String),
    /// A prerequisite of this machine is missing (never in CI).
    Skipped(String),
    /// Not started because of `--fail-fast`.
    NotRun,
}

impl Verdict {
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed(_) => "failed",
            Verdict::Skipped(_) => "skipped",
            Verdict::NotRun => "not run",
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, Verdict::Failed(_))
    }

    fn note(&self) -> &str {
        match self {
            Verdict::Failed(note) | Verdict::Skipped(note) => note,
            Verdict::NotRun => "--fail-fast after a failure",
            Verdict::Passed => "",
        }
    }
}

pub struct Row {
    pub tier: &'static str,
    pub verdict: Verdict,
    pub elapsed: Duration,
}

/// Longest note shown in the table; the full text is in the tier's own output.
const NOTE_WIDTH: usize = 100;

pub fn render(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.tier.len()).chain([4]).max().unwrap_or(4);
    let mut out = String::from("==> summary\n");
    let mut line = |tier: &str, result: &str, seconds: &str, note: &str| {
        let text = format!("{tier:<width$}  {result:<7}  {seconds:>7}  {note}");
        writeln!(out, "{}", text.trim_end()).unwrap();
    };
    line("tier", "result", "seconds", "note");
    for row in rows {
        let seconds = progress::seconds(row.elapsed);
        line(row.tier, row.verdict.word(), &seconds, &shorten(row.verdict.note()));
    }

    let count = |word: &str| rows.iter().filter(|r| r.verdict.word() == word).count();
    let uncounted: Vec<String> = rows
        .iter()
        .filter(|r| matches!(r.verdict, Verdict::Skipped(_) | Verdict::NotRun))
        .map(|r| format!("{} ({})", r.tier, r.verdict.word()))
        .collect();
    if !uncounted.is_empty() {
        writeln!(out, "not counted below: {}", uncounted.join(", ")).unwrap();
    }
    writeln!(out, "{} passed, {} failed", count("passed"), count("failed")).unwrap();
    out
}

fn shorten(note: &str) -> String {
    let first_line = note.lines().next().unwrap_or("");
    if first_line.chars().count() <= NOTE_WIDTH {
        first_line.to_string()
    } else {
        let cut: String = first_line.chars().take(NOTE_WIDTH - 1).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(tier: &'static str, verdict: Verdict, millis: u64) -> Row {
        Row { tier, verdict, elapsed: Duration::from_millis(millis) }
    }

    #[test]
    fn table_and_closing_line() {
        let rows = [
            row("lint", Verdict::Passed, 12_340),
            row("unit", Verdict::Failed("`cargo test` failed".into()), 40_100),
            row("host", Verdict::Skipped("not root".into()), 0),
        ];
        assert_eq!(
            render(&rows),
            "==> summary\n\
             tier  result   seconds  note\n\
             lint  passed      12.3\n\
             unit  failed      40.1  `cargo test` failed\n\
             host  skipped      0.0  not root\n\
             not counted below: host (skipped)\n\
             1 passed, 1 failed\n"
        );
    }

    #[test]
    fn closing_line_is_last_and_counts_tiers() {
        let rows = [row("lint", Verdict::Passed, 1), row("unit", Verdict::Passed, 1)];
        assert_eq!(render(&rows).lines().last(), Some("2 passed, 0 failed"));
    }

    #[test]
    fn long_notes_are_cut() {
        let note = "x".repeat(300);
        assert_eq!(shorten(&note).chars().count(), NOTE_WIDTH);
        assert_eq!(shorten("first\nsecond"), "first");
    }
}
