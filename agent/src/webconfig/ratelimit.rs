//! `rate_limit`: exporter-toolkit's token bucket (Go's `rate.NewLimiter(rate.Every(interval), burst)`) over every
//! request the agent serves. A request without a token gets 429. `interval: 0` (or no `rate_limit`) turns it off;
//! `burst: 0` with an interval refuses every request, as in exporter-toolkit.

use std::{
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::file::{GoDuration, RateLimitConfig, WebConfigError};

#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: f64,
    /// Tokens saved up and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `None` when the section is absent or its interval is 0.
    pub fn new(config: &Path, c: &RateLimitConfig) -> Result<Option<Self>, WebConfigError> {
        let interval = match &c.interval {
            None => Duration::ZERO,
            Some(GoDuration::Nanos(n)) => Duration::from_nanos(*n),
            Some(GoDuration::Text(s)) => {
                parse_go_duration(s).map_err(|m| WebConfigError::new(config, "rate_limit.interval", m))?
            }
        };
        if interval.is_zero() {
            return Ok(None);
        }
        let burst = c.burst.unwrap_or(0);
        if burst == 0 {
            tracing::warn!("web config {}: rate_limit.burst is 0: every request is refused", config.display());
        }
        tracing::info!(?interval, burst, "rate limit on");
        Ok(Some(Self { interval, burst: burst as f64, state: Mutex::new((burst as f64, Instant::now())) }))
    }

    /// Takes a token if one is there.
    pub fn allow(&self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let earned = now.saturating_duration_since(s.1).as_secs_f64() / self.interval.as_secs_f64();
        *s = ((s.0 + earned).min(self.burst), now.max(s.1));
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`
/// (`300ms`, `1.5h`, `2h45m`); `0` alone is zero.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("invalid duration {s:?} (Go syntax, e.g. 100ms, 1s, 1m30s)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(bad)?;
        let n: f64 = rest[..n_len].parse().map_err(|_| bad())?;
        rest = &rest[n_len..];
        let u_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..u_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[u_len..];
        total += n * unit;
    }
    if s.is_empty() || !total.is_finite() {
        return Err(bad());
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "1", "s", "1x", "-1s", "1..2s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bucket_refills_one_token_per_interval_up_to_burst() {
        let c = RateLimitConfig { interval: Some(GoDuration::Text("1s".into())), burst: Some(2) };
        let l = RateLimiter::new(Path::new("w.yml"), &c).unwrap().unwrap();
        let t0 = l.state.lock().unwrap().1;
        assert!(l.allow_at(t0) && l.allow_at(t0), "a full bucket of 2");
        assert!(!l.allow_at(t0 + Duration::from_millis(500)));
        assert!(l.allow_at(t0 + Duration::from_millis(1000)));
        assert!(!l.allow_at(t0 + Duration::from_millis(1500)));
        assert!(l.allow_at(t0 + Duration::from_secs(60)) && l.allow_at(t0 + Duration::from_secs(60)));
        assert!(!l.allow_at(t0 + Duration::from_secs(60)), "never more than burst saved up");
        let off = RateLimitConfig { interval: Some(GoDuration::Nanos(0)), burst: Some(5) };
        assert!(RateLimiter::new(Path::new("w.yml"), &off).unwrap().is_none());
        let e = RateLimiter::new(
            Path::new("w.yml"),
            &RateLimitConfig { interval: Some(GoDuration::Text("x".into())), burst: None },
        );
        assert!(e.unwrap_err().to_string().contains("rate_limit.interval: invalid duration"));
    }
}
