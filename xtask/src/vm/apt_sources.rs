//! The Debian archives this machine's apt already uses, read from its own sources
//! (`/etc/apt/sources.list`, `/etc/apt/sources.list.d/*.list` and deb822 `*.sources`), so the VM
//! harness fetches kernels from the same mirror and never hard-codes one.
//!
//! Two archives matter: the main one (a plain codename, `-updates` or `-backports` suite, e.g.
//! `http://deb.debian.org/debian`) and the security one (a `-security` suite). Each keeps the
//! `Signed-By` it has on this machine.

use std::fs;

use anyhow::{Result, bail};

/// Where apt keeps its sources on this machine.
const SOURCES_LIST: &str = "/etc/apt/sources.list";
const SOURCES_PARTS: &str = "/etc/apt/sources.list.d";
/// Used when an entry has no `Signed-By`: the keyring Debian's own sources point at.
const DEFAULT_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const OS_RELEASE: &str = "/etc/os-release";

/// One archive: its URI and the `Signed-By` value to use with it (a keyring path, or an inline
/// key whose continuation lines are kept as in the source file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub uri: String,
    pub signed_by: String,
}

/// The archives the kernel packages come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archives {
    pub main: Archive,
    pub security: Archive,
    /// Where they were found, for messages.
    pub found_in: String,
}

/// One `deb` entry of a sources file.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    uri: String,
    suites: Vec<String>,
    signed_by: Option<String>,
}

/// Reads the machine's apt sources and picks the main and the security archive of this
/// machine's Debian release (`VERSION_CODENAME` in `/etc/os-release`).
pub fn discover() -> Result<Archives> {
    let mut entries = Vec::new();
    let mut files = Vec::new();
    if let Ok(text) = fs::read_to_string(SOURCES_LIST) {
        entries.extend(parse_one_line(&text));
        files.push(SOURCES_LIST.to_string());
    }
    let mut parts: Vec<_> = fs::read_dir(SOURCES_PARTS)
        .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    parts.sort();
    for path in parts {
        let Ok(text) = fs::read_to_string(&path) else { continue };
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => entries.extend(parse_one_line(&text)),
            Some("sources") => entries.extend(parse_deb822(&text)),
            _ => continue, // apt ignores other names too (e.g. `*.disabled`)
        }
        files.push(path.display().to_string());
    }
    let codename = fs::read_to_string(OS_RELEASE).ok().and_then(|t| codename(&t));
    pick(&entries, codename.as_deref(), &files.join(", "))
}

/// Chooses the archives: the main one carries `<codename>` (or its `-updates`/`-backports`), the
/// security one `<codename>-security`. Without a known codename any plain Debian-looking suite
/// counts. The security archive falls back to the main one's sibling `…/debian-security` only
/// when no entry carries a `-security` suite.
fn pick(entries: &[Entry], codename: Option<&str>, found_in: &str) -> Result<Archives> {
    let has = |e: &Entry, pred: &dyn Fn(&str) -> bool| e.suites.iter().any(|s| pred(s));
    let archive = |e: &Entry| Archive {
        uri: e.uri.trim_end_matches('/').to_string(),
        signed_by: e.signed_by.clone().unwrap_or_else(|| DEFAULT_KEYRING.to_string()),
    };
    let is_main_suite = |s: &str| match codename {
        Some(c) => s == c || s == format!("{c}-updates") || s == format!("{c}-backports"),
        None => !s.contains('/') && (!s.contains('-') || s.ends_with("-updates") || s.ends_with("-backports")),
    };
    let is_security_suite = |s: &str| match codename {
        Some(c) => s == format!("{c}-security"),
        None => s.ends_with("-security"),
    };
    let Some(main) = entries.iter().find(|e| has(e, &is_main_suite)).map(archive) else {
        bail!(
            "no Debian archive for {} in this machine's apt sources ({}); the VM harness takes \
             its archive URI from there",
            codename.unwrap_or("this release"),
            if found_in.is_empty() { "none readable" } else { found_in }
        );
    };
    let security = match entries.iter().find(|e| has(e, &is_security_suite)) {
        Some(e) => archive(e),
        None => match main.uri.strip_suffix("/debian") {
            Some(base) => Archive { uri: format!("{base}/debian-security"), signed_by: main.signed_by.clone() },
            None => bail!(
                "this machine's apt sources ({found_in}) have no `-security` suite and the main \
                 archive {} is not a `/debian` path to derive it from",
                main.uri
            ),
        },
    };
    Ok(Archives { main, security, found_in: found_in.to_string() })
}

/// `VERSION_CODENAME` from an os-release text.
fn codename(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// `deb [options] uri suite [component...]` lines; `deb-src`, `cdrom:` and comments are skipped.
fn parse_one_line(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) else { continue };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(after) => match after.split_once(']') {
                Some((opts, rest)) => (opts, rest.trim_start()),
                None => continue,
            },
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else { continue };
        if uri.starts_with("cdrom:") {
            continue;
        }
        let signed_by = options
            .split_whitespace()
            .find_map(|o| o.strip_prefix("signed-by=").or_else(|| o.strip_prefix("Signed-By=")))
            .map(str::to_string);
        out.push(Entry { uri: uri.to_string(), suites: vec![suite.to_string()], signed_by });
    }
    out
}

/// deb822 stanzas (blank-line separated, continuation lines start with a space); only enabled
/// stanzas whose `Types` include `deb`.
fn parse_deb822(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for stanza in stanzas(text) {
        let field = |name: &str| stanza.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let types = field("Types").unwrap_or("");
        let enabled = !field("Enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("no"));
        if !enabled || !types.split_whitespace().any(|t| t == "deb") {
            continue;
        }
        let suites: Vec<String> = field("Suites").unwrap_or("").split_whitespace().map(str::to_string).collect();
        let signed_by = field("Signed-By").map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        for uri in field("URIs").unwrap_or("").split_whitespace() {
            if !uri.starts_with("cdrom:") {
                out.push(Entry { uri: uri.to_string(), suites: suites.clone(), signed_by: signed_by.clone() });
            }
        }
    }
    out
}

/// The stanzas as `(field, value)` lists; a multi-line value keeps its continuation lines.
fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = current.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((key, value)) = line.split_once(':') {
            current.push((key.trim().to_string(), value.trim().to_string()));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The `Signed-By` line(s) of a deb822 stanza for `archive`; an inline key goes on indented
/// continuation lines, as apt expects.
pub fn signed_by_field(archive: &Archive) -> String {
    if archive.signed_by.contains('\n') {
        format!("Signed-By:\n {}", archive.signed_by)
    } else {
        format!("Signed-By: {}", archive.signed_by)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
Enabled: no
URIs: http://elsewhere.invalid/debian
Suites: bookworm
";

    #[test]
    fn deb822_main_and_security() {
        let entries = parse_deb822(DEB822);
        assert_eq!(entries.len(), 2);
        let a = pick(&entries, Some("bookworm"), "x").unwrap();
        assert_eq!(a.main.uri, "http://deb.debian.org/debian");
        assert_eq!(a.security.uri, "http://deb.debian.org/debian-security");
        assert_eq!(a.main.signed_by, DEFAULT_KEYRING);
    }

    #[test]
    fn one_line_format_with_options_and_fallback_security() {
        let text = "# comment\ndeb-src http://m.invalid/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://m.invalid/debian/ bookworm main\n\
                    deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n";
        let entries = parse_one_line(text);
        assert_eq!(entries.len(), 2);
        let a = pick(&entries, None, "x").unwrap();
        assert_eq!(a.main, Archive { uri: "http://m.invalid/debian".into(), signed_by: "/k.gpg".into() });
        assert_eq!(a.security.uri, "http://m.invalid/debian-security");
    }

    #[test]
    fn inline_keys_keep_their_continuation_lines() {
        let text = "Types: deb\nURIs: http://m.invalid/debian\nSuites: trixie\n\
                    Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc\n";
        let a = pick(&parse_deb822(text), Some("trixie"), "x").unwrap();
        assert_eq!(a.main.signed_by, "-----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc");
        assert_eq!(signed_by_field(&a.main), "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n abc");
    }

    #[test]
    fn no_debian_archive_is_an_error() {
        let entries = parse_one_line("deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n");
        let err = pick(&entries, Some("bookworm"), "/etc/apt/sources.list").unwrap_err().to_string();
        assert!(err.contains("no Debian archive for bookworm"), "{err}");
    }

    #[test]
    fn third_party_plain_suites_do_not_win_over_the_release() {
        let text = "deb https://deb.nodesource.com/node_20.x nodistro main\n\
                    deb http://deb.debian.org/debian bookworm main\n";
        let a = pick(&parse_one_line(text), Some("bookworm"), "x").unwrap();
        assert_eq!(a.main.uri, "http://deb.debian.org/debian");
        assert_eq!(codename("NAME=x\nVERSION_CODENAME=bookworm\n").as_deref(), Some("bookworm"));
    }
}
