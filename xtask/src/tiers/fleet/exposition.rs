//! Just enough of the Prometheus text format for the tier's comparisons: samples of one metric, filtered by label
//! values, summed by one label.

use std::collections::BTreeMap;

/// One sample: its labels and value.
#[derive(Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of metric `name` in an exposition text.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = if let Some(body) = rest.strip_prefix('{') {
                let (labels, value) = body.rsplit_once('}')?;
                (parse_labels(labels)?, value)
            } else if rest.starts_with(' ') {
                (BTreeMap::new(), rest)
            } else {
                return None; // a longer metric name with this prefix
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// `a="x",b="y\"z"` → map (escapes `\\`, `\"`, `\n` undone).
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break i,
                c => value.push(c),
            }
        };
        out.insert(key.trim().trim_start_matches(',').to_string(), value);
        rest = after[end + 1..].trim_start_matches(',').trim();
    }
    Some(out)
}

/// Sum of `name`'s samples whose labels include every `(label, value)` of `filter`, by the value of `by`.
pub fn sum_by(text: &str, name: &str, filter: &[(&str, &str)], by: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in samples(text, name) {
        if filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)) {
            let key = s.labels.get(by).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0) += s.value as u64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP mmuscope_invalidations_total x\n\
        mmuscope_invalidations_total{cgroup=\"/system.slice/a.scope\",event=\"clear\",cause=\"madvise\"} 150\n\
        mmuscope_invalidations_total{cgroup=\"/system.slice/a.scope\",event=\"clear\",cause=\"page_fault\"} 50\n\
        mmuscope_invalidations_total{cgroup=\"unknown\",event=\"unmap\",cause=\"exit\"} 3\n\
        mmuscope_invalidations_total_other{cgroup=\"x\"} 9\n\
        mmuscope_cgroups_tracked 2\n\
        mmuscope_build_info{version=\"0.1.0\",kernel=\"a \\\"b\\\", c\"} 1\n";

    #[test]
    fn sums_by_label_with_a_filter() {
        let by = sum_by(TEXT, "mmuscope_invalidations_total", &[("cgroup", "/system.slice/a.scope")], "event");
        assert_eq!(by, BTreeMap::from([("clear".to_string(), 200)]));
        let all = sum_by(TEXT, "mmuscope_invalidations_total", &[], "cgroup");
        assert_eq!(all.get("unknown"), Some(&3));
        assert_eq!(all.len(), 2, "the longer metric name is not included: {all:?}");
        assert_eq!(samples(TEXT, "mmuscope_cgroups_tracked")[0].value, 2.0);
        assert_eq!(samples(TEXT, "mmuscope_build_info")[0].labels["kernel"], "a \"b\", c");
    }
}
