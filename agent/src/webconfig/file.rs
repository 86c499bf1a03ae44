//! The web configuration file in the Prometheus exporter-toolkit format (`--web.config.file`):
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt          # relative paths are relative to this file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert   # or NoClientCert (default), VerifyClientCertIfGiven
//!   client_ca_file: clients-ca.crt
//!   min_version: TLS12             # TLS12 or TLS13
//! basic_auth_users:
//!   alice: $2y$10$...              # bcrypt hash
//! http_server_config:
//!   headers: { X-Frame-Options: deny }
//! ```
//!
//! Every key of exporter-toolkit's format is known (see docs/http.md for which are implemented and which are accepted
//! with a warning); keys it does not know are errors, as in exporter-toolkit, so a typo never silently disables a
//! security setting. Every error names the file and the key.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfigFile {
    #[serde(default)]
    pub tls_server_config: Option<TlsServerConfig>,
    #[serde(default)]
    pub http_server_config: Option<HttpServerConfig>,
    #[serde(default)]
    pub basic_auth_users: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub rate_limit: Option<RateLimitConfig>,
    /// Paths served without basic auth (exporter-toolkit's development branch has this key).
    #[serde(default)]
    pub basic_auth_excluded_paths: Option<Vec<String>>,
}

/// `rate_limit`: a token bucket over all requests, one token every `interval`, at most `burst` saved up.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub interval: Option<GoDuration>,
    pub burst: Option<u64>,
}

/// A Go `time.Duration` as YAML gives it: a string such as `1s` or `1m30s`, or an integer of nanoseconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum GoDuration {
    Nanos(u64),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    /// Inline PEM instead of `cert_file`.
    pub cert: Option<String>,
    /// Inline PEM instead of `key_file`.
    pub key: Option<String>,
    pub client_auth_type: Option<String>,
    pub client_ca_file: Option<String>,
    /// Inline PEM instead of `client_ca_file`.
    pub client_ca: Option<String>,
    pub min_version: Option<String>,
    pub max_version: Option<String>,
    pub cipher_suites: Option<Vec<String>>,
    pub curve_preferences: Option<Vec<String>>,
    pub prefer_server_cipher_suites: Option<bool>,
    pub client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    pub http2: Option<bool>,
    pub headers: Option<BTreeMap<String, String>>,
}

/// A problem with the web configuration, naming the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("web config {}: {key}: {message}", file.display())]
pub struct WebConfigError {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl WebConfigError {
    pub fn new(file: &Path, key: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), key: key.into(), message: message.into() }
    }
}

/// Reads and parses `path`; YAML errors carry the key path (`tls_server_config.client_auth_type`) and the line.
pub fn read(path: &Path) -> Result<WebConfigFile, WebConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| WebConfigError::new(path, "(file)", e.to_string()))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<WebConfigFile, WebConfigError> {
    if text.trim().is_empty() {
        return Ok(WebConfigFile::default());
    }
    let de = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { "(top level)".to_string() } else { key };
        // serde_norway prefixes some messages with the parent's path; the key above already says where.
        let message = e.into_inner().to_string();
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if !prefix.contains([' ', '`']) => rest.to_string(),
            _ => message,
        };
        // Some errors (an unknown top-level key) come without a position: find the key's line ourselves.
        let message = match key_line(text, &key) {
            Some(line) if !message.contains(" at line ") => format!("{message} at line {line}"),
            _ => message,
        };
        WebConfigError::new(path, key, message)
    })
}

/// 1-based line of the first `name:` for the last component of `key` (a best effort for position-less errors).
fn key_line(text: &str, key: &str) -> Option<usize> {
    let name = key.rsplit('.').next().filter(|n| !n.is_empty() && !n.starts_with('('))?;
    let wanted = format!("{name}:");
    text.lines().position(|l| l.trim_start().trim_start_matches("- ").starts_with(&wanted)).map(|i| i + 1)
}

/// A file named in the config, relative to the config file's directory (as exporter-toolkit resolves them).
pub fn resolve(config: &Path, file: &str) -> PathBuf {
    let p = Path::new(file);
    if p.is_absolute() { p.to_path_buf() } else { config.parent().unwrap_or(Path::new(".")).join(p) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(Path::new("/etc/web.yml"), text).unwrap_err().to_string()
    }

    #[test]
    fn full_file_parses() {
        let c = parse(
            Path::new("/x/web.yml"),
            "tls_server_config:\n  cert_file: a.crt\n  key_file: /abs/a.key\n  client_auth_type: RequireAndVerifyClientCert\n  \
             client_ca_file: ca.crt\n  min_version: TLS12\nbasic_auth_users:\n  alice: $2y$10$abc\nhttp_server_config:\n  \
             headers:\n    X-Frame-Options: deny\n",
        )
        .unwrap();
        let tls = c.tls_server_config.unwrap();
        assert_eq!(tls.cert_file.as_deref(), Some("a.crt"));
        assert_eq!(c.basic_auth_users.unwrap()["alice"], "$2y$10$abc");
        assert_eq!(resolve(Path::new("/x/web.yml"), "a.crt"), PathBuf::from("/x/a.crt"));
        assert_eq!(resolve(Path::new("/x/web.yml"), "/abs/a.key"), PathBuf::from("/abs/a.key"));
        assert!(parse(Path::new("w"), "\n").unwrap().tls_server_config.is_none());
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = err("tls_server_config:\n  cert_fil: a\n");
        assert!(e.starts_with("web config /etc/web.yml: tls_server_config.cert_fil: unknown field `cert_fil`"), "{e}");
        let e = err("basic_auth_users: [a, b]\n");
        assert!(e.starts_with("web config /etc/web.yml: basic_auth_users: "), "{e}");
        let e = err("tls_server_config:\n  prefer_server_cipher_suites: maybe\n");
        assert!(e.contains("tls_server_config.prefer_server_cipher_suites: "), "{e}");
        let e = err("nonsense: 1\n");
        assert!(e.contains("web config /etc/web.yml: nonsense: unknown field `nonsense`"), "{e}");
    }
}
