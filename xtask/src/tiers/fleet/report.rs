//! What the tier saw on each booted system, kept as the outputs themselves (the issue's acceptance asks for them) and
//! written to `target/fleet/report.md`.

use std::fmt::Write;

/// One expected-vs-observed figure.
pub struct Comparison {
    pub what: String,
    pub expected: u64,
    pub observed: u64,
}

#[derive(Default)]
pub struct HostReport {
    pub system: String,
    /// When the host's check began; sections say how far in they were taken.
    pub started: Option<std::time::Instant>,
    pub kernel: String,
    pub image: String,
    pub boot_seconds: f64,
    /// `(title, output)` in the order they were taken.
    pub sections: Vec<(String, String)>,
    pub comparisons: Vec<Comparison>,
    pub problems: Vec<String>,
    pub seconds: f64,
}

impl HostReport {
    pub fn section(&mut self, title: impl Into<String>, output: impl Into<String>) {
        let at = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
        let (title, output) = (format!("{} [+{at:.0} s]", title.into()), output.into());
        super::say(format!("{} | {title}:\n{}", self.system, indent(output.trim_end())));
        self.sections.push((title, output));
    }

    pub fn problem(&mut self, what: impl Into<String>) {
        let what = what.into();
        super::say(format!("{} | PROBLEM: {what}", self.system));
        self.problems.push(what);
    }

    pub fn compare(&mut self, what: impl Into<String>, expected: u64, observed: u64) {
        let what = what.into();
        let verdict = if expected == observed { "exact" } else { "MISMATCH" };
        super::say(format!("{} | {what}: expected {expected}, observed {observed} ({verdict})", self.system));
        if expected != observed {
            self.problems.push(format!("{what}: expected {expected}, observed {observed}"));
        }
        self.comparisons.push(Comparison { what, expected, observed });
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let verdict = if self.problems.is_empty() { "passed" } else { "FAILED" };
        let _ = writeln!(out, "## {} — {} ({verdict}, {:.0} s)\n", self.system, self.kernel, self.seconds);
        let _ = writeln!(out, "Image: {}; booted to the command channel in {:.0} s.\n", self.image, self.boot_seconds);
        if !self.comparisons.is_empty() {
            out.push_str("| figure | expected | observed |\n|---|---|---|\n");
            for c in &self.comparisons {
                let _ = writeln!(out, "| {} | {} | {} |", c.what, c.expected, c.observed);
            }
            out.push('\n');
        }
        for p in &self.problems {
            let _ = writeln!(out, "- **problem**: {p}");
        }
        for (title, output) in &self.sections {
            let _ = writeln!(out, "### {title}\n\n```text\n{}\n```\n", output.trim_end());
        }
        out
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}
