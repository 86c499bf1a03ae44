//! Log2 latency buckets, edge-correct: bucket `k` holds values `v` with `2^(k-1) < v <= 2^k`
//! (bucket 0 holds 0 and 1), so a value of exactly `2^k` ns counts in the `le = 2^k` bucket.
//! The layout equals Prometheus native-histogram schema 0.

/// Number of buckets kept per histogram. The last one also holds everything above
/// `2^(HIST_BUCKETS-1)` ns (about 275 s), which user space exports as `+Inf` only.
pub const HIST_BUCKETS: usize = 40;

/// Index of the bucket that counts `ns`: `ceil(log2(ns))`, clamped to the last bucket.
///
/// Written as a branch-free-ish binary search because the BPF target has no count-leading-zeros
/// instruction and `u64::leading_zeros` would call a compiler-builtins routine the BPF linker
/// cannot provide.
#[inline(always)]
pub fn log2_bucket(ns: u64) -> u32 {
    if ns <= 1 {
        return 0;
    }
    // ceil(log2(ns)) == floor(log2(ns - 1)) + 1 for ns >= 2.
    let mut v = ns - 1;
    let mut k = 0u32;
    if v >= 1 << 32 {
        v >>= 32;
        k += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        k += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        k += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        k += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        k += 2;
    }
    if v >= 1 << 1 {
        k += 1;
    }
    let b = k + 1;
    if b >= HIST_BUCKETS as u32 { HIST_BUCKETS as u32 - 1 } else { b }
}

/// Inclusive upper bound of bucket `k` in nanoseconds (`2^k`), `None` for the overflow bucket.
pub fn bucket_upper_bound_ns(k: usize) -> Option<u64> {
    (k < HIST_BUCKETS - 1).then(|| 1u64 << k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seams_are_edge_correct() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 0);
        assert_eq!(log2_bucket(2), 1);
        assert_eq!(log2_bucket(3), 2);
        for k in 1..(HIST_BUCKETS as u32 - 1) {
            let edge = 1u64 << k;
            assert_eq!(log2_bucket(edge), k, "2^{k} belongs to le=2^{k}");
            assert_eq!(log2_bucket(edge + 1), k + 1, "2^{k}+1 belongs to the next bucket");
            assert_eq!(log2_bucket(edge - 1), if k == 1 { 0 } else { k }, "2^{k}-1");
        }
    }

    #[test]
    fn large_values_clamp_to_overflow_bucket() {
        let last = HIST_BUCKETS as u32 - 1;
        assert_eq!(log2_bucket(1 << (last - 1)), last - 1);
        assert_eq!(log2_bucket((1 << (last - 1)) + 1), last);
        assert_eq!(log2_bucket(u64::MAX), last);
        assert_eq!(bucket_upper_bound_ns(HIST_BUCKETS - 1), None);
        assert_eq!(bucket_upper_bound_ns(10), Some(1024));
    }

    #[test]
    fn matches_float_reference() {
        let mut v = 2u64;
        while v < 1 << 45 {
            for d in [v - 1, v, v + 1, v + v / 3] {
                let want = ((d as f64).log2().ceil() as u32).min(HIST_BUCKETS as u32 - 1);
                // f64 is exact for these magnitudes; compare against the closed form.
                assert_eq!(log2_bucket(d), if d <= 1 { 0 } else { want }, "value {d}");
            }
            v = v * 3 / 2 + 1;
        }
    }
}
