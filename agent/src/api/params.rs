//! Strict query-string parsing: unknown parameters, repeated parameters and out-of-range values are 400s with a
//! message that names the parameter, never a panic or a silently ignored typo.

use std::collections::BTreeMap;

use super::error::ApiError;

/// The decoded query string, each parameter at most once.
pub struct Query(BTreeMap<String, String>);

impl Query {
    /// Parses `raw` and rejects parameters not in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded_pairs(raw.unwrap_or(""))? {
            if !allowed.contains(&k.as_str()) {
                let hint = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                return Err(ApiError::BadRequest(format!("unknown query parameter {k:?} (allowed: {hint})")));
            }
            if map.insert(k.clone(), v).is_some() {
                return Err(ApiError::BadRequest(format!("query parameter {k:?} given more than once")));
            }
        }
        Ok(Self(map))
    }

    /// An integer in `min..=max`, `default` when absent.
    pub fn int(&self, name: &str, min: u64, max: u64, default: u64) -> Result<u64, ApiError> {
        let Some(v) = self.0.get(name) else { return Ok(default) };
        let n: u64 = v.parse().map_err(|_| {
            ApiError::BadRequest(format!("{name} must be an integer between {min} and {max}, got {v:?}"))
        })?;
        if !(min..=max).contains(&n) {
            return Err(ApiError::BadRequest(format!("{name} must be between {min} and {max}, got {n}")));
        }
        Ok(n)
    }

    /// The raw value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// One of `choices`, `default` when absent.
    pub fn choice<'a>(&self, name: &str, choices: &[&'a str], default: &'a str) -> Result<&'a str, ApiError> {
        let Some(v) = self.0.get(name) else { return Ok(default) };
        choices
            .iter()
            .find(|c| **c == v.as_str())
            .copied()
            .ok_or_else(|| ApiError::BadRequest(format!("{name} must be one of {}, got {v:?}", choices.join(", "))))
    }
}

/// `application/x-www-form-urlencoded` pairs; invalid percent-encoding or UTF-8 is a 400.
fn form_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Result<String, ApiError> {
    let bad = || ApiError::BadRequest(format!("invalid percent-encoding in query string: {s:?}"));
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::BadRequest(format!("query string is not UTF-8: {s:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        let q = Query::parse(Some("limit=5&sort=p99"), &["limit", "sort"]).unwrap();
        assert_eq!(q.int("limit", 1, 10, 3).unwrap(), 5);
        assert_eq!(q.choice("sort", &["p99", "id"], "id").unwrap(), "p99");
        assert_eq!(Query::parse(None, &[]).unwrap().int("limit", 1, 10, 3).unwrap(), 3);
        for (raw, allowed) in
            [("x=1", &["limit"][..]), ("limit=1&limit=2", &["limit"]), ("limit=%zz", &["limit"]), ("%ff=1", &["limit"])]
        {
            assert!(matches!(Query::parse(Some(raw), allowed), Err(ApiError::BadRequest(_))), "{raw}");
        }
        let q = Query::parse(Some("limit=0&sort=x"), &["limit", "sort"]).unwrap();
        assert!(q.int("limit", 1, 10, 3).is_err());
        assert!(q.choice("sort", &["p99"], "p99").is_err());
        let q = Query::parse(Some("limit=-1"), &["limit"]).unwrap();
        assert!(q.int("limit", 1, 10, 3).is_err());
        let q = Query::parse(Some("limit=99999999999999999999999"), &["limit"]).unwrap();
        assert!(q.int("limit", 1, 10, 3).is_err());
    }
}
