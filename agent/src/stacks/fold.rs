//! Folded stacks (`root;caller;…;callee count`, Brendan Gregg's format, which flame-graph tools read) and the SVG
//! flame graph drawn from them with inferno.

use std::collections::BTreeMap;

/// One aggregated stack of a request, named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedStack {
    /// The owner cgroup's path (its label in `/metrics`).
    pub cgroup: String,
    /// [`super::kind_name`] of its kind.
    pub kind: &'static str,
    /// For double notifications, the kind of double (`end_then_gather`, …), as in the `kind` label of
    /// `mmuscope_double_notifications_total`.
    pub double_kind: Option<&'static str>,
    /// For invalidations, the event and the cause, as in the labels of `mmuscope_invalidations_total` (`unknown` event
    /// in tracepoint mode).
    pub event: Option<String>,
    pub cause: Option<&'static str>,
    /// Function names, innermost first (as the kernel stores them).
    pub frames: Vec<String>,
    pub count: u64,
}

/// A frame as folded text: no `;` (the separator), no whitespace (the count follows the last space).
fn clean(frame: &str) -> String {
    frame.chars().map(|c| if c == ';' || c.is_whitespace() { '_' } else { c }).collect()
}

/// The folded lines of `stacks`: `cgroup;kind;outermost;…;innermost count`, identical stacks merged, sorted. The kind
/// of a double notification is `double_notification:<double kind>`.
pub fn folded(stacks: &[NamedStack]) -> Vec<String> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for s in stacks {
        let kind = match s.double_kind {
            Some(d) => format!("{}:{d}", s.kind),
            None => s.kind.to_string(),
        };
        let mut parts = vec![clean(&s.cgroup), kind];
        parts.extend(s.frames.iter().rev().map(|f| clean(f)));
        *merged.entry(parts.join(";")).or_default() += s.count;
    }
    merged.into_iter().map(|(stack, n)| format!("{stack} {n}")).collect()
}

/// An SVG flame graph of folded `lines`.
pub fn svg(lines: &[String], title: &str) -> anyhow::Result<Vec<u8>> {
    let mut options = inferno::flamegraph::Options::default();
    options.title = title.to_string();
    options.count_name = "events".to_string();
    let mut out = Vec::new();
    if lines.is_empty() {
        // inferno refuses an empty input; a graph of nothing says so instead.
        let none = ["no_stacks_captured 1".to_string()];
        inferno::flamegraph::from_lines(&mut options, none.iter().map(String::as_str), &mut out)?;
    } else {
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(cgroup: &str, frames: &[&str], count: u64) -> NamedStack {
        NamedStack {
            cgroup: cgroup.into(),
            kind: "invalidation",
            double_kind: None,
            event: Some("clear".into()),
            cause: Some("madvise"),
            frames: frames.iter().map(|f| f.to_string()).collect(),
            count,
        }
    }

    #[test]
    fn folds_outermost_first_and_merges_identical_stacks() {
        let stacks = [
            stack("/a b", &["zap_page_range_single", "do_madvise", "__x64_sys_madvise"], 3),
            stack("/a b", &["zap_page_range_single", "do_madvise", "__x64_sys_madvise"], 4),
            stack("/c", &["unmap_vmas", "kvm_mmu_notifier_invalidate_range_start [kvm]"], 1),
            NamedStack {
                kind: "double_notification",
                double_kind: Some("end_then_gather"),
                ..stack("/c", &["__mmu_notifier_invalidate_range", "tlb_finish_mmu"], 2)
            },
        ];
        assert_eq!(
            folded(&stacks),
            [
                "/a_b;invalidation;__x64_sys_madvise;do_madvise;zap_page_range_single 7",
                "/c;double_notification:end_then_gather;tlb_finish_mmu;__mmu_notifier_invalidate_range 2",
                "/c;invalidation;kvm_mmu_notifier_invalidate_range_start_[kvm];unmap_vmas 1",
            ]
        );
    }

    #[test]
    fn svg_is_well_formed_even_when_empty() {
        for lines in [vec![], vec!["/a;invalidation;f;g 2".to_string()]] {
            let out = String::from_utf8(svg(&lines, "t").unwrap()).unwrap();
            assert!(out.trim_start().starts_with("<?xml") && out.trim_end().ends_with("</svg>"), "{out}");
        }
    }
}
