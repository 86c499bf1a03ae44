//! Cardinality policy: how many cgroups get their own series, and how long a deleted cgroup's series stay.

use std::time::Duration;

/// `--max-cgroups` and `--cgroups.deleted-ttl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Cgroups with their own series; the rest aggregate into `cgroup="other"`. `None`: no limit.
    pub max_cgroups: Option<usize>,
    /// A deleted cgroup's series disappear this long after the deletion was noticed.
    pub deleted_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self { max_cgroups: Some(DEFAULT_MAX_CGROUPS), deleted_ttl: DEFAULT_DELETED_TTL }
    }
}

pub const DEFAULT_MAX_CGROUPS: usize = 10_000;
pub const DEFAULT_DELETED_TTL: Duration = Duration::from_secs(300);

impl Policy {
    /// How often the hierarchies are re-walked to notice deletions (misses trigger a walk at once).
    pub fn rescan_interval(&self) -> Duration {
        (self.deleted_ttl / 4).clamp(Duration::from_millis(500), Duration::from_secs(60))
    }
}

/// Parses a Prometheus-style duration: `300ms`, `30s`, `5m`, `2h`, `1d`, or combinations such as `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (examples: 100us, 500ms, 30s, 5m, 1h30m)");
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "us" => Duration::from_micros(1),
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        total = total
            .checked_add(unit.checked_mul(u32::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "m", "5x", "-1s", "1.5s", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rescan_interval_is_bounded() {
        let p = |secs| Policy { max_cgroups: None, deleted_ttl: Duration::from_secs(secs) };
        assert_eq!(p(0).rescan_interval(), Duration::from_millis(500));
        assert_eq!(p(300).rescan_interval(), Duration::from_secs(60));
        assert_eq!(p(20).rescan_interval(), Duration::from_secs(5));
    }
}
