//! An HTTP(S) client of the agent's JSON API, for `mmuscope top` and `mmuscope snapshot`, so both work against a
//! remote agent: base URL, basic auth, a CA file for the agent's certificate, an optional client certificate.

mod snapshot;
mod stacks;

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::Args;
use serde::de::DeserializeOwned;

pub use snapshot::run as snapshot;
pub use stacks::{StacksArgs, run as stacks};

/// Where the agent is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Base URL of the agent.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9476")]
    pub url: String,
    /// Basic-auth user name.
    #[arg(long = "auth.username", value_name = "USER")]
    pub username: Option<String>,
    /// File holding the basic-auth password (or set MMUSCOPE_PASSWORD).
    #[arg(long = "auth.password-file", value_name = "PATH")]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) to verify the agent's certificate; default: the Mozilla roots.
    #[arg(long = "tls.ca-file", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for agents that require one; with --tls.key-file.
    #[arg(long = "tls.cert-file", value_name = "PATH", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// Private key (PEM) of --tls.cert-file.
    #[arg(long = "tls.key-file", value_name = "PATH", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// Do not verify the agent's certificate (testing only).
    #[arg(long = "tls.insecure-skip-verify")]
    pub insecure: bool,
}

/// `mmuscope top`.
#[derive(Args, Debug, Clone)]
pub struct TopArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Refresh interval (e.g. 1s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = crate::cgroups::parse_duration)]
    pub interval: Duration,
    /// Cgroups fetched per refresh (the busiest by total invalidations; rates are computed from these).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=crate::api::MAX_LIMIT))]
    pub limit: u64,
}

/// `mmuscope snapshot`.
#[derive(Args, Debug, Clone)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Print JSON (`{"status": ..., "cgroups": ...}`) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Sort key of the cgroup list.
    #[arg(long, default_value = "invalidations", value_parser = ["invalidations", "p99", "double_notifications", "fork_copies", "cgroup", "id"])]
    pub sort: String,
    /// Cgroups listed.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=crate::api::MAX_LIMIT))]
    pub limit: u64,
}

/// A configured client for one agent.
pub struct Client {
    base: String,
    http: ureq::Agent,
    auth: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> Result<Self> {
        let base = args.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--url must start with http:// or https://, got {:?}", args.url);
        }
        let mut tls = ureq::tls::TlsConfig::builder().disable_verification(args.insecure);
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca).with_context(|| format!("--tls.ca-file {}", ca.display()))?;
            let certs = pem_certs(&pem).with_context(|| format!("--tls.ca-file {}", ca.display()))?;
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if let (Some(cert), Some(key)) = (&args.cert_file, &args.key_file) {
            let pem = std::fs::read(cert).with_context(|| format!("--tls.cert-file {}", cert.display()))?;
            let chain = pem_certs(&pem).with_context(|| format!("--tls.cert-file {}", cert.display()))?;
            let kpem = std::fs::read(key).with_context(|| format!("--tls.key-file {}", key.display()))?;
            let k =
                ureq::tls::PrivateKey::from_pem(&kpem).with_context(|| format!("--tls.key-file {}", key.display()))?;
            tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, k)));
        }
        let http = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(Duration::from_secs(10)))
            .http_status_as_error(false)
            .build()
            .into();
        let auth = match &args.username {
            Some(user) => {
                let password = match &args.password_file {
                    Some(f) => std::fs::read_to_string(f)
                        .with_context(|| format!("--auth.password-file {}", f.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                    None => std::env::var("MMUSCOPE_PASSWORD").unwrap_or_default(),
                };
                let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {token}"))
            }
            None => None,
        };
        Ok(Self { base, http, auth })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` with its own time limit, the body as is; a non-2xx answer becomes an error quoting the agent's
    /// `{"error": ...}`.
    pub fn get_bytes(&self, path: &str, timeout: Duration) -> Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url).config().timeout_global(Some(timeout)).build();
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body =
            resp.body_mut().with_config().limit(64 << 20).read_to_vec().with_context(|| format!("reading {url}"))?;
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&body);
            let msg = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| text.into_owned());
            bail!("GET {url}: HTTP {status}: {}", msg.trim());
        }
        Ok(body)
    }

    /// `GET path` as JSON; a non-2xx answer becomes an error quoting the agent's `{"error": ...}`.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(a) = &self.auth {
            req = req.header("Authorization", a);
        }
        let mut resp = req.call().with_context(|| format!("GET {url}"))?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().with_context(|| format!("reading {url}"))?;
        if !(200..300).contains(&status) {
            let msg = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(body);
            bail!("GET {url}: HTTP {status}: {}", msg.trim());
        }
        serde_json::from_str(&body).with_context(|| format!("GET {url}: unexpected response"))
    }
}

fn pem_certs(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(pem) {
        if let ureq::tls::PemItem::Certificate(c) = item? {
            out.push(c);
        }
    }
    if out.is_empty() {
        bail!("no PEM certificate found");
    }
    Ok(out)
}

/// `0.000012` → `12.0µs`.
pub fn human_seconds(s: f64) -> String {
    if s >= 1.0 {
        format!("{s:.2}s")
    } else if s >= 1e-3 {
        format!("{:.1}ms", s * 1e3)
    } else if s >= 1e-6 {
        format!("{:.1}µs", s * 1e6)
    } else {
        format!("{:.0}ns", s * 1e9)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_seconds() {
        assert_eq!(super::human_seconds(0.000012), "12.0µs");
        assert_eq!(super::human_seconds(0.0025), "2.5ms");
        assert_eq!(super::human_seconds(3.0), "3.00s");
        assert_eq!(super::human_seconds(5e-7), "500ns");
    }
}
