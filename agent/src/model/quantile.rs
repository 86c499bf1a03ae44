//! Quantiles from log2 nanosecond buckets, interpolated linearly inside the bucket as Prometheus'
//! `histogram_quantile` does, so the API's p99 and a PromQL p99 over the same data agree.

use mmuscope_abi::{BracketStats, HIST_BUCKETS, bucket_upper_bound_ns};

/// The `q` quantile (0..=1) in seconds; `None` without samples.
pub fn quantile_seconds(stats: &BracketStats, q: f64) -> Option<f64> {
    let total: u64 = stats.buckets.iter().sum();
    if total == 0 || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for k in 0..HIST_BUCKETS {
        let n = stats.buckets[k];
        if n > 0 && (below + n) as f64 >= rank {
            // Bucket k holds (2^(k-1), 2^k] ns; bucket 0 holds [0, 1].
            let upper = bucket_upper_bound_ns(k).unwrap_or(1 << (HIST_BUCKETS - 2)) as f64;
            let lower = if k == 0 { 0.0 } else { upper / 2.0 };
            let within = ((rank - below as f64) / n as f64).clamp(0.0, 1.0);
            return Some((lower + (upper - lower) * within) / 1e9);
        }
        below += n;
    }
    None
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn interpolates_inside_the_bucket() {
        // 100 values in (512, 1024] ns: p50 is the middle of that bucket, p100 its upper edge.
        let s = BracketStats::of(&[1000; 100]);
        assert_eq!(quantile_seconds(&s, 0.5), Some(768e-9));
        assert_eq!(quantile_seconds(&s, 1.0), Some(1024e-9));
        let s = BracketStats::of(&[100, 100, 100, 100, 100, 100, 100, 100, 100, 5_000_000]);
        assert!(quantile_seconds(&s, 0.5).unwrap() <= 128e-9);
        assert!(quantile_seconds(&s, 0.99).unwrap() > 4e-3);
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(quantile_seconds(&BracketStats::default(), 0.5), None);
        assert_eq!(quantile_seconds(&BracketStats::of(&[1]), 1.5), None);
    }
}
