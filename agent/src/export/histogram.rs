//! Converts the kernel's log2 nanosecond buckets into cumulative Prometheus buckets in seconds.

use mmuscope_abi::{BracketStats, HIST_BUCKETS};

/// Exported bucket range: `le = 2^FIRST ns` (256 ns, which also holds everything faster)
/// to `le = 2^LAST ns` (~69 s); slower brackets appear in `+Inf` only. Every bound is an exact
/// power of two, so edge-correctness of the kernel buckets carries over.
pub const FIRST: usize = 8;
pub const LAST: usize = 36;
const _: () = assert!(LAST < HIST_BUCKETS - 1);

/// Cumulative `(le seconds, count)` for `FIRST..=LAST`.
pub fn cumulative_seconds(stats: &BracketStats) -> impl Iterator<Item = (f64, u64)> + '_ {
    let mut acc = 0u64;
    stats.buckets.iter().enumerate().take(LAST + 1).filter_map(move |(k, n)| {
        acc += n;
        (k >= FIRST).then(|| (bound_seconds(k), acc))
    })
}

fn bound_seconds(k: usize) -> f64 {
    (1u64 << k) as f64 / 1e9
}

/// The `le` label of each bound of [`cumulative_seconds`], formatted once (a float to text is the costliest part of
/// writing a bucket line, and every histogram series has 29).
pub fn bound_labels() -> &'static [String] {
    static LABELS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| (FIRST..=LAST).map(|k| bound_seconds(k).to_string()).collect());
    &LABELS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_powers_land_in_their_own_bucket() {
        // 1024 ns = 2^10 must be counted in le=1.024e-6 but not in le=5.12e-7.
        let b: Vec<_> = cumulative_seconds(&BracketStats::of(&[1024])).collect();
        let le = |k: usize| b[k - FIRST];
        assert_eq!(le(9), (512e-9, 0));
        assert_eq!(le(10), (1024e-9, 1));
        let b: Vec<_> = cumulative_seconds(&BracketStats::of(&[1025])).collect();
        assert_eq!(b[10 - FIRST].1, 0);
        assert_eq!(b[11 - FIRST].1, 1);
    }

    #[test]
    fn fast_values_fold_into_first_bucket_and_slow_ones_into_inf() {
        let s = BracketStats::of(&[0, 1, 200, 256, 257, 1 << 40]);
        let b: Vec<_> = cumulative_seconds(&s).collect();
        assert_eq!(b[0], (256e-9, 4));
        assert_eq!(b[1].1, 5);
        assert_eq!(b.last().unwrap().1, 5, "2^40 ns is beyond the last finite bucket");
        assert_eq!(s.count, 6);
        assert!(b.windows(2).all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0));
    }
}
