//! Increases of the series a [`Check`] selects between two scrapes, and whether they are what it wants.

use std::collections::BTreeMap;

use mmuscope_tests::promtext::{Exposition, Sample};

use crate::families::Check;
use crate::record::EventCounts;

/// A check's expected increase (its lower bound), as [`increase`] gives increases.
pub(super) fn expected(c: &Check) -> i64 {
    i64::try_from(c.expected).unwrap_or(i64::MAX)
}

/// Whether `observed` is what `c` wants: exactly its value, or within its bound.
pub(super) fn within(c: &Check, observed: i64) -> bool {
    let max = i64::try_from(c.max.unwrap_or(c.expected)).unwrap_or(i64::MAX);
    (expected(c)..=max).contains(&observed)
}

/// A check with an empty cgroup selects the agent's own series, which have no `cgroup` label.
pub(super) fn matches(s: &Sample, c: &Check) -> bool {
    let cgroup =
        if c.cgroup.is_empty() { !s.labels.contains_key("cgroup") } else { s.labels.get("cgroup") == Some(&c.cgroup) };
    cgroup && c.labels.iter().all(|(k, v)| s.labels.get(*k) == Some(v))
}

/// Increase of the series group `c` selects (absent = 0). Signed: a counter that went down (a reset, a series that
/// vanished) is a negative increase, which fails every check, the checks for zero included.
pub(super) fn increase(before: &Exposition, after: &Exposition, c: &Check) -> i64 {
    let sum = |e: &Exposition| e.samples_named(c.metric).filter(|s| matches(s, c)).map(|s| s.value).sum::<f64>();
    // Counters are integers well below 2^53, so the f64 difference is exact.
    (sum(after) - sum(before)) as i64
}

/// Non-zero increases of `metric` per cgroup and event (diagnostics).
pub(super) fn by_cgroup_event(before: &Exposition, after: &Exposition, metric: &str) -> BTreeMap<String, EventCounts> {
    let group = |e: &Exposition| {
        let mut out: BTreeMap<(String, String), f64> = BTreeMap::new();
        for s in e.samples_named(metric) {
            let key = (
                s.labels.get("cgroup").cloned().unwrap_or_default(),
                s.labels.get("event").cloned().unwrap_or_default(),
            );
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    };
    let (old, new) = (group(before), group(after));
    let mut out: BTreeMap<String, EventCounts> = BTreeMap::new();
    for ((cgroup, event), value) in new {
        let delta = value - old.get(&(cgroup.clone(), event.clone())).copied().unwrap_or(0.0);
        // A decrease is shown too (negative): it is as wrong as unexplained growth.
        if delta != 0.0 {
            out.entry(cgroup).or_default().insert(event, delta as i64);
        }
    }
    out
}

/// A scrape from exposition text (the tests of this module and of `compare`).
#[cfg(test)]
pub(super) fn exposition(text: &str) -> Exposition {
    Exposition::parse(text).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increases_select_by_cgroup_and_labels_and_sum_the_rest() {
        let before =
            exposition("m{cgroup=\"/a\",kind=\"x\",other=\"1\"} 5\nm{cgroup=\"/a\",kind=\"x\",other=\"2\"} 1\n");
        let after = exposition(
            "m{cgroup=\"/a\",kind=\"x\",other=\"1\"} 7\nm{cgroup=\"/a\",kind=\"x\",other=\"2\"} 2\n\
             m{cgroup=\"/a\",kind=\"y\"} 4\nm{cgroup=\"/b\",kind=\"x\"} 9\n",
        );
        assert_eq!(increase(&before, &after, &Check::new("m", "/a", &[("kind", "x")], 0)), 3);
        assert_eq!(increase(&before, &after, &Check::new("m", "/a", &[], 0)), 7);
        assert_eq!(increase(&before, &after, &Check::new("m", "/c", &[], 0)), 0);
    }

    #[test]
    fn bounds_pass_within_and_fail_outside() {
        let c = Check::new("m", "/a", &[], 0).up_to(1);
        assert!(within(&c, 0) && within(&c, 1));
        assert!(!within(&c, 2) && !within(&c, -1));
        let exact = Check::new("m", "/a", &[], 3).up_to(3);
        assert_eq!(exact.max, None);
        assert!(within(&exact, 3) && !within(&exact, 4));
    }

    #[test]
    fn agent_wide_checks_select_series_without_a_cgroup() {
        let before = exposition("e{map=\"stats\"} 1\nm{cgroup=\"/a\",map=\"stats\"} 5\n");
        let after = exposition("e{map=\"stats\"} 3\ne{map=\"other\"} 1\nm{cgroup=\"/a\",map=\"stats\"} 9\n");
        let check = Check::agent_wide("e", 0);
        assert_eq!(check.series(), "e");
        assert_eq!(increase(&before, &after, &check), 3);
    }

    #[test]
    fn a_counter_that_went_down_fails_a_check_for_zero() {
        let before = exposition("m{cgroup=\"/a\",kind=\"x\"} 5\n");
        let after = exposition("m{cgroup=\"/a\",kind=\"x\"} 2\n");
        let check = Check::new("m", "/a", &[("kind", "x")], 0);
        assert_eq!(increase(&before, &after, &check), -3);
        assert_ne!(increase(&before, &after, &check), expected(&check));
    }
}
