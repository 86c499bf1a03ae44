//! Which Debian kernel package a request means: a series (`6.1`, `6.12`) is the newest
//! `linux-image-amd64` of that series in its suites, `sid` the newest kernel in sid (whatever its
//! series), and an exact `linux-image-…` name (or its release, `6.1.0-56-amd64`) is that package.
//!
//! The metapackage `linux-image-amd64` points at the newest flavour-`amd64` image of each suite,
//! so following its `Depends` avoids guessing ABI names.

use std::{cmp::Ordering, fmt, process::Command, str::FromStr, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    apt::{Candidate, PrivateApt},
    exec,
};

const METAPACKAGE: &str = "linux-image-amd64";
const IMAGE_PREFIX: &str = "linux-image-";

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `major.minor`.
    Series(Series),
    /// The newest kernel in sid.
    Sid,
    /// An exact package, `linux-image-<release>`.
    Package(String),
}

/// A kernel series, `6.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Series {
    pub major: u32,
    pub minor: u32,
}

/// A resolved package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub package: String,
    pub version: String,
    pub suite: String,
    pub archive: String,
    /// `uname -r` of the kernel, the package name without `linux-image-`.
    pub release: String,
    pub series: Series,
}

impl FromStr for Request {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "sid" || s == "unstable" {
            return Ok(Request::Sid);
        }
        if let Ok(series) = s.parse::<Series>() {
            return Ok(Request::Series(series));
        }
        if s.starts_with(IMAGE_PREFIX) && s != METAPACKAGE {
            return Ok(Request::Package(s.to_string()));
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('-') {
            return Ok(Request::Package(format!("{IMAGE_PREFIX}{s}")));
        }
        bail!(
            "unknown kernel {s:?}: give a series (6.1, 6.12), `sid`, a release (6.1.0-56-amd64) or a linux-image-… package"
        )
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Series(s) => write!(f, "{s}"),
            Request::Sid => f.write_str("sid"),
            Request::Package(p) => f.write_str(p),
        }
    }
}

impl FromStr for Series {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (major, minor) = s.split_once('.').context("a series is `major.minor`")?;
        Ok(Series { major: major.parse()?, minor: minor.parse()? })
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl Series {
    /// The series of a Debian kernel package version (`6.12.95-1~bpo12+1` → 6.12).
    pub fn of_version(version: &str) -> Option<Self> {
        let upstream = version.split_once(':').map_or(version, |(_, v)| v);
        let mut parts = upstream.split(['.', '-', '~', '+']);
        Some(Series { major: parts.next()?.parse().ok()?, minor: parts.next()?.parse().ok()? })
    }
}

/// The suites a series is taken from (in preference order for equal versions); any suite for
/// series not listed here.
fn suites_for(series: Series) -> Option<&'static [&'static str]> {
    match (series.major, series.minor) {
        (5, 10) => Some(&["bullseye-security", "bullseye"]),
        (6, 1) => Some(&["bookworm-security"]),
        (6, 12) => Some(&["trixie-security", "bookworm-backports", "trixie"]),
        _ => None,
    }
}

/// Resolves `request` against the private apt lists.
pub fn resolve(apt: &PrivateApt, request: &Request) -> Result<Resolved> {
    match request {
        Request::Series(series) => {
            let metas = apt.madison(METAPACKAGE)?;
            let allowed = suites_for(*series);
            let fits = |c: &&Candidate| {
                Series::of_version(&c.version) == Some(*series)
                    && allowed.is_none_or(|suites| suites.contains(&c.suite.as_str()))
            };
            let meta = newest(metas.iter().filter(fits))?.with_context(|| {
                format!(
                    "no {METAPACKAGE} of series {series} in {}; apt has: {}",
                    allowed.map_or("the private suites".to_string(), |s| s.join(", ")),
                    listing(&metas)
                )
            })?;
            image_of(apt, meta)
        }
        Request::Sid => {
            let metas = apt.madison(METAPACKAGE)?;
            let meta = newest(metas.iter().filter(|c| c.suite == "sid"))?
                .with_context(|| format!("no {METAPACKAGE} in sid; apt has: {}", listing(&metas)))?;
            image_of(apt, meta)
        }
        Request::Package(package) => {
            let found = apt.madison(package)?;
            let chosen = newest(found.iter())?.expect("madison returns at least one row");
            if is_metapackage(apt, chosen)? {
                // e.g. `linux-image-6.12-amd64`: bookworm's build of 6.12 (gcc-12), newest of its suite.
                return image_of(apt, chosen);
            }
            resolved(chosen)
        }
    }
}

/// Whether `c` is a metapackage: it depends on a `linux-image-<release>` package (an image does not).
fn is_metapackage(apt: &PrivateApt, c: &Candidate) -> Result<bool> {
    let fields = apt.show(&c.package, &c.version)?;
    let depends = fields.iter().find(|(k, _)| k == "Depends").map_or("", |(_, v)| v.as_str());
    Ok(depends
        .split([',', '|'])
        .filter_map(|d| d.split_whitespace().next())
        .any(|name| name.starts_with(IMAGE_PREFIX) && name != c.package))
}

/// The concrete image the metapackage version depends on.
fn image_of(apt: &PrivateApt, meta: &Candidate) -> Result<Resolved> {
    let fields = apt.show(&meta.package, &meta.version)?;
    let depends = fields.iter().find(|(k, _)| k == "Depends").map(|(_, v)| v.as_str()).unwrap_or("");
    let image = depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .find(|name| name.starts_with(IMAGE_PREFIX) && *name != METAPACKAGE)
        .with_context(|| format!("{} {} depends on no {IMAGE_PREFIX}…: {depends:?}", meta.package, meta.version))?;
    let rows = apt.madison(image)?;
    let row = rows
        .iter()
        .find(|c| c.version == meta.version && c.suite == meta.suite)
        .or_else(|| rows.iter().find(|c| c.version == meta.version))
        .with_context(|| {
            format!("{image} {} (from {} {}) is not in apt's lists", meta.version, meta.package, meta.suite)
        })?;
    resolved(row)
}

fn resolved(c: &Candidate) -> Result<Resolved> {
    let release = c.package.strip_prefix(IMAGE_PREFIX).unwrap_or(&c.package).to_string();
    let series =
        Series::of_version(&c.version).with_context(|| format!("cannot read a kernel series from {}", c.version))?;
    Ok(Resolved {
        package: c.package.clone(),
        version: c.version.clone(),
        suite: c.suite.clone(),
        archive: c.archive.clone(),
        release,
        series,
    })
}

/// The candidate with the highest Debian version (`dpkg --compare-versions`); the first of equals.
fn newest<'a>(candidates: impl Iterator<Item = &'a Candidate>) -> Result<Option<&'a Candidate>> {
    let mut best: Option<&Candidate> = None;
    for c in candidates {
        best = match best {
            Some(b) if compare_versions(&c.version, &b.version)? != Ordering::Greater => Some(b),
            _ => Some(c),
        };
    }
    Ok(best)
}

/// Orders two Debian versions with dpkg itself.
pub fn compare_versions(a: &str, b: &str) -> Result<Ordering> {
    if a == b {
        return Ok(Ordering::Equal);
    }
    let limit = Duration::from_secs(10);
    let gt = exec::output_any_status(Command::new("dpkg").args(["--compare-versions", a, "gt", b]), limit)?;
    if gt.status.success() {
        return Ok(Ordering::Greater);
    }
    let lt = exec::output_any_status(Command::new("dpkg").args(["--compare-versions", a, "lt", b]), limit)?;
    Ok(if lt.status.success() { Ordering::Less } else { Ordering::Equal })
}

fn listing(rows: &[Candidate]) -> String {
    let all: Vec<_> = rows.iter().map(|c| format!("{} ({})", c.version, c.suite)).collect();
    if all.is_empty() { "nothing".to_string() } else { all.join(", ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let series = |major, minor| Request::Series(Series { major, minor });
        assert_eq!("6.1".parse::<Request>().unwrap(), series(6, 1));
        assert_eq!("6.12".parse::<Request>().unwrap(), series(6, 12));
        assert_eq!("sid".parse::<Request>().unwrap(), Request::Sid);
        assert_eq!("6.1.0-56-amd64".parse::<Request>().unwrap(), Request::Package("linux-image-6.1.0-56-amd64".into()));
        assert_eq!(
            "linux-image-6.12.117+deb13-amd64".parse::<Request>().unwrap(),
            Request::Package("linux-image-6.12.117+deb13-amd64".into())
        );
        assert!("linux-image-amd64".parse::<Request>().is_err());
        assert!("latest".parse::<Request>().is_err());
    }

    #[test]
    fn series_of_versions() {
        let s = |v| Series::of_version(v).map(|s| s.to_string());
        assert_eq!(s("6.1.192-2").as_deref(), Some("6.1"));
        assert_eq!(s("6.12.95-1~bpo12+1").as_deref(), Some("6.12"));
        assert_eq!(s("7.2.13-1").as_deref(), Some("7.2"));
        assert_eq!(s("1:6.3-1").as_deref(), Some("6.3"));
        assert_eq!(s("garbage"), None);
        assert!(Series { major: 6, minor: 12 } > Series { major: 6, minor: 6 });
    }

    #[test]
    fn dpkg_orders_versions() {
        assert_eq!(compare_versions("6.12.95-1~bpo12+1", "6.12.95-1").unwrap(), Ordering::Less);
        assert_eq!(compare_versions("6.12.117-1", "6.12.95-1").unwrap(), Ordering::Greater);
        let c = |v: &str| Candidate { package: "p".into(), version: v.into(), archive: "a".into(), suite: "s".into() };
        let rows = [c("6.1.180-1"), c("6.1.192-2"), c("6.1.9-1")];
        assert_eq!(newest(rows.iter()).unwrap().unwrap().version, "6.1.192-2");
    }
}
