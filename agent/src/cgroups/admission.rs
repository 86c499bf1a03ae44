//! The cardinality cap: which cgroup label paths get their own series.
//!
//! First come, first served, and sticky both ways: a cgroup that got a slot keeps it while it has live series; a
//! cgroup that was folded into `cgroup="other"` stays there until its series expire, so `other` never shrinks
//! because a slot freed up (its counters stay monotonic). A slot frees when no live id uses the path any more.

use foldhash::{HashSet, HashSetExt};

/// Label of the aggregate of all cgroups beyond the cap.
pub const OTHER: &str = "other";

#[derive(Debug, Default)]
pub struct Admission {
    admitted: HashSet<String>,
    overflowed: HashSet<String>,
    /// Distinct cgroups ever folded into `other` (`mmuscope_cgroups_overflow_total`).
    overflow_total: u64,
}

impl Admission {
    /// Decides for this scrape's live paths (in the order given, oldest first) and releases slots of paths that are
    /// no longer live. The same input twice changes nothing (the caller skips repeats of a steady host).
    pub fn update<'a>(&mut self, max: Option<usize>, live: impl IntoIterator<Item = &'a str>) {
        let mut seen: HashSet<&str> = HashSet::new();
        let ordered: Vec<&str> = live.into_iter().filter(|p| seen.insert(p)).collect();
        self.admitted.retain(|p| seen.contains(p.as_str()));
        self.overflowed.retain(|p| seen.contains(p.as_str()));
        for p in ordered {
            if self.admitted.contains(p) || self.overflowed.contains(p) {
                continue;
            }
            if max.is_none_or(|m| self.admitted.len() < m) {
                self.admitted.insert(p.to_string());
            } else {
                self.overflowed.insert(p.to_string());
                self.overflow_total += 1;
            }
        }
    }

    /// Whether `path` has its own series (else it is in `other`).
    pub fn is_admitted(&self, path: &str) -> bool {
        !self.overflowed.contains(path)
    }

    pub fn tracked(&self) -> usize {
        self.admitted.len()
    }

    pub fn overflow_total(&self) -> u64 {
        self.overflow_total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_overflow_and_release() {
        let mut a = Admission::default();
        a.update(Some(2), ["/a", "/b", "/c"]);
        assert_eq!((a.tracked(), a.overflow_total()), (2, 1));
        assert!(a.is_admitted("/a") && a.is_admitted("/b") && !a.is_admitted("/c"));
        // Same scrape again: nothing new counted.
        a.update(Some(2), ["/a", "/b", "/c"]);
        assert_eq!(a.overflow_total(), 1);
        // /a expires: its slot goes to a newcomer, /c stays in other.
        a.update(Some(2), ["/b", "/c", "/d"]);
        assert!(a.is_admitted("/d") && !a.is_admitted("/c"));
        assert_eq!((a.tracked(), a.overflow_total()), (2, 1));
        // /c expires too and comes back later: counted again as a new overflow.
        a.update(Some(2), ["/b", "/d"]);
        a.update(Some(2), ["/b", "/d", "/c"]);
        assert_eq!(a.overflow_total(), 2);
    }

    #[test]
    fn unlimited() {
        let mut a = Admission::default();
        let paths: Vec<String> = (0..1000).map(|i| format!("/{i}")).collect();
        a.update(None, paths.iter().map(String::as_str));
        assert_eq!((a.tracked(), a.overflow_total()), (1000, 0));
    }
}
