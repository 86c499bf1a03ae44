//! Summaries of repeated measurements: median and min–max over n samples (the machine is shared, so a mean would
//! follow the outliers).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Stats {
    /// `None` for no samples or a sample that is not a finite number.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let mid = s.len() / 2;
        let median = if s.len() % 2 == 1 { s[mid] } else { (s[mid - 1] + s[mid]) / 2.0 };
        Some(Self { n: s.len(), median, min: s[0], max: s[s.len() - 1] })
    }

    /// `median (min–max)` with `digits` decimals.
    pub fn show(&self, digits: usize) -> String {
        format!("{:.digits$} ({:.digits$}–{:.digits$})", self.median, self.min, self.max)
    }
}

/// One-sided sign test: the probability of at least `k` of `n` paired differences going one way when either way is
/// equally likely (no effect). `n` rounds all going the same way give 2⁻ⁿ.
pub fn sign_test_p(k: usize, n: usize) -> f64 {
    let choose = |i: usize| (0..i).fold(1.0, |c, j| c * (n - j) as f64 / (j + 1) as f64);
    (k..=n).map(choose).sum::<f64>() / 2f64.powi(n as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test() {
        assert_eq!(sign_test_p(7, 7), 1.0 / 128.0);
        assert_eq!(sign_test_p(6, 7), 8.0 / 128.0);
        assert_eq!(sign_test_p(0, 7), 1.0);
    }

    #[test]
    fn median_and_range() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.n, s.median, s.min, s.max), (3, 2.0, 1.0, 3.0));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[1.0, f64::NAN]).is_none());
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
    }
}
