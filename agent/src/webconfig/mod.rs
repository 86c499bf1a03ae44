//! `--web.config.file`: TLS and basic auth in the Prometheus exporter-toolkit format ([`file`]), loaded into a
//! rustls configuration ([`tls`]) and a user table ([`users`]).
//!
//! [`WebConfigSource::current`] is asked once per accepted connection. It re-reads the file when it or a file it
//! names (certificate, key, client CA) changed, so rotated certificates are picked up without a restart. A bad file
//! at start-up is fatal (the error names the file and the key); a bad file later is logged and the last good
//! configuration stays in force.

mod client_auth;
pub mod file;
mod ratelimit;
mod suites;
mod tls;
mod users;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use axum::http::{HeaderName, HeaderValue};

pub use file::WebConfigError;
pub use ratelimit::RateLimiter;
pub use users::Users;

/// The configuration in force for one connection.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub users: Users,
    /// `http_server_config.headers`, added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `rate_limit`, over every request on every listener.
    pub rate_limit: Option<RateLimiter>,
    /// `basic_auth_excluded_paths`: served without credentials.
    pub auth_excluded: Vec<String>,
}

impl WebConfig {
    pub fn load(path: &Path) -> Result<(Self, Vec<PathBuf>), WebConfigError> {
        let f = file::read(path)?;
        let mut watched = vec![path.to_path_buf()];
        let tls = match &f.tls_server_config {
            Some(t) => {
                watched.extend(tls::files(path, t));
                Some(tls::server_config(path, t)?)
            }
            None => None,
        };
        let users = Users::new(path, &f.basic_auth_users.clone().unwrap_or_default())?;
        let mut headers = Vec::new();
        if let Some(h) = &f.http_server_config {
            if h.http2 == Some(true) {
                tracing::warn!(
                    "web config {}: http_server_config.http2 is ignored: mmuscope serves HTTP/1.1 only",
                    path.display()
                );
            }
            for (name, value) in h.headers.iter().flatten() {
                let key = format!("http_server_config.headers.{name}");
                let n =
                    HeaderName::try_from(name.as_str()).map_err(|e| WebConfigError::new(path, &key, e.to_string()))?;
                let v = HeaderValue::try_from(value.as_str())
                    .map_err(|e| WebConfigError::new(path, &key, e.to_string()))?;
                headers.push((n, v));
            }
        }
        let rate_limit = match &f.rate_limit {
            Some(r) => RateLimiter::new(path, r)?,
            None => None,
        };
        let auth_excluded = f.basic_auth_excluded_paths.unwrap_or_default();
        if let Some(bad) = auth_excluded.iter().find(|p| !p.starts_with('/')) {
            return Err(WebConfigError::new(path, "basic_auth_excluded_paths", format!("{bad:?} is not a path")));
        }
        Ok((Self { tls, users, headers, rate_limit, auth_excluded }, watched))
    }
}

/// Modification stamps of the watched files (`None` for a missing one).
type Stamp = Vec<Option<(SystemTime, u64, u64)>>;

fn stamp(files: &[PathBuf]) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    files
        .iter()
        .map(|f| std::fs::metadata(f).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len(), m.ino())))
        .collect()
}

struct Loaded {
    config: Arc<WebConfig>,
    files: Vec<PathBuf>,
    stamp: Stamp,
}

/// The web configuration, re-read when its files change.
pub struct WebConfigSource {
    path: Option<PathBuf>,
    loaded: Mutex<Loaded>,
}

impl WebConfigSource {
    /// Loads `path` (none: plain HTTP, no auth). Errors here are fatal for the caller.
    pub fn new(path: Option<PathBuf>) -> Result<Self, WebConfigError> {
        let loaded = match &path {
            Some(p) => {
                let (config, files) = WebConfig::load(p)?;
                Loaded { config: Arc::new(config), stamp: stamp(&files), files }
            }
            None => Loaded { config: Arc::default(), files: Vec::new(), stamp: Vec::new() },
        };
        Ok(Self { path, loaded: Mutex::new(loaded) })
    }

    /// Whether connections are TLS (as configured at start-up; for log lines).
    pub fn is_tls(&self) -> bool {
        self.current().tls.is_some()
    }

    /// The configuration for a new connection, re-read first if a watched file changed.
    pub fn current(&self) -> Arc<WebConfig> {
        let mut l = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else { return l.config.clone() };
        let now = stamp(&l.files);
        if now != l.stamp {
            l.stamp = now;
            match WebConfig::load(path) {
                Ok((config, files)) => {
                    tracing::info!("web config {} reloaded", path.display());
                    l.stamp = stamp(&files);
                    l.files = files;
                    l.config = Arc::new(config);
                }
                Err(e) => tracing::error!("{e}; keeping the previous web configuration"),
            }
        }
        l.config.clone()
    }
}

#[cfg(test)]
mod tests;
