//! A benchmark's result: its tables and targets, written as JSON under `target/bench/` and rendered as the
//! benchmark's generated block of BENCHMARKS.md (between `<!-- bench:NAME begin -->` and `<!-- bench:NAME end -->`;
//! everything outside those markers is written by hand and left alone).

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::machine::Machine;

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub name: String,
    pub title: String,
    /// The one command that reproduces every figure of this report.
    pub command: String,
    pub quick: bool,
    pub machine: Machine,
    pub tables: Vec<Table>,
    pub targets: Vec<Target>,
    pub notes: Vec<String>,
    /// Every raw sample, by series name, for whoever wants to recompute.
    pub samples: std::collections::BTreeMap<String, Vec<f64>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Target {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

impl Report {
    /// Structural checks (the `--quick` smoke asserts exactly these, never timings): a named report with at least
    /// one table, rectangular tables, no empty cell, finite samples.
    pub fn check(&self) -> Result<()> {
        if self.name.is_empty() || self.tables.is_empty() {
            bail!("report {:?} has no tables", self.name);
        }
        for t in &self.tables {
            if t.columns.is_empty() || t.rows.is_empty() {
                bail!("{}: table {:?} is empty", self.name, t.title);
            }
            if let Some(r) = t.rows.iter().find(|r| r.len() != t.columns.len() || r.iter().any(|c| c.is_empty())) {
                bail!("{}: table {:?}: row {r:?} does not fill the {} columns", self.name, t.title, t.columns.len());
            }
        }
        if let Some((k, _)) = self.samples.iter().find(|(_, v)| v.is_empty() || v.iter().any(|x| !x.is_finite())) {
            bail!("{}: series {k} has no samples or a non-finite one", self.name);
        }
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", self.title);
        out += &format!("Reproduce: `{}`  \nMachine: {}\n\n", self.command, self.machine.describe());
        for t in &self.tables {
            out += &format!("**{}**\n\n| {} |\n|{}\n", t.title, t.columns.join(" | "), "---|".repeat(t.columns.len()));
            for r in &t.rows {
                out += &format!("| {} |\n", r.join(" | "));
            }
            out += "\n";
        }
        if !self.targets.is_empty() {
            out += "| target | measured | |\n|---|---|---|\n";
            for t in &self.targets {
                out += &format!("| {} | {} | {} |\n", t.target, t.measured, if t.met { "met" } else { "**missed**" });
            }
            out += "\n";
        }
        for n in &self.notes {
            out += &format!("- {n}\n");
        }
        out
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        std::fs::create_dir_all(path.parent().context("no parent")?)?;
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

/// `doc` with the block of `name` replaced by `body` (or appended at the end when the markers are missing).
pub fn replace_block(doc: &str, name: &str, body: &str) -> String {
    let (begin, end) = (format!("<!-- bench:{name} begin -->"), format!("<!-- bench:{name} end -->"));
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    match (doc.find(&begin), doc.find(&end)) {
        (Some(b), Some(e)) if b < e => format!("{}{block}{}", &doc[..b], &doc[e + end.len()..]),
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let m = Machine {
            cpu: "cpu".into(),
            cores: 2,
            kernel: "6.18".into(),
            load_before: "1 1 1".into(),
            load_after: "2 2 2".into(),
            foreign_bpf_before: "none".into(),
            foreign_bpf_after: "none".into(),
        };
        Report {
            name: "x".into(),
            title: "X".into(),
            command: "cargo xtask bench x".into(),
            quick: true,
            machine: m,
            tables: vec![Table {
                title: "t".into(),
                columns: vec!["a".into(), "b".into()],
                rows: vec![vec!["1".into(), "2".into()]],
            }],
            targets: vec![Target { target: "a ≤ 2".into(), measured: "1".into(), met: true }],
            notes: vec![],
            samples: [("a".to_owned(), vec![1.0])].into(),
        }
    }

    #[test]
    fn check_accepts_well_formed_and_rejects_ragged_tables() {
        let mut r = report();
        r.check().unwrap();
        assert!(r.markdown().contains("| 1 | 2 |\n"));
        r.tables[0].rows.push(vec!["only one".into()]);
        assert!(r.check().is_err());
        let mut r = report();
        r.samples.insert("b".into(), vec![f64::INFINITY]);
        assert!(r.check().is_err());
    }

    #[test]
    fn blocks_are_replaced_in_place_or_appended() {
        let doc = "# B\n\nintro\n<!-- bench:x begin -->\nold\n<!-- bench:x end -->\ntail\n";
        let new = replace_block(doc, "x", "new\n");
        assert_eq!(new, "# B\n\nintro\n<!-- bench:x begin -->\nnew\n<!-- bench:x end -->\ntail\n");
        assert_eq!(replace_block(&new, "x", "new"), new);
        let added = replace_block(doc, "y", "why");
        assert!(
            added.starts_with(doc.trim_end()) && added.ends_with("<!-- bench:y begin -->\nwhy\n<!-- bench:y end -->\n")
        );
    }
}
