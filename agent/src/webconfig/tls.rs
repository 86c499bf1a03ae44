//! `tls_server_config` → a rustls server configuration (ring provider; TLS 1.2 and 1.3).

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};

use super::file::{TlsServerConfig, WebConfigError, resolve};

/// Files a TLS configuration reads (watched for changes so certificates rotate without a restart).
pub fn files(config: &Path, tls: &TlsServerConfig) -> Vec<std::path::PathBuf> {
    [&tls.cert_file, &tls.key_file, &tls.client_ca_file].into_iter().flatten().map(|f| resolve(config, f)).collect()
}

pub fn server_config(config: &Path, tls: &TlsServerConfig) -> Result<Arc<ServerConfig>, WebConfigError> {
    let err = |key: &str, msg: String| WebConfigError::new(config, format!("tls_server_config.{key}"), msg);
    for (key, set) in [
        ("cipher_suites", tls.cipher_suites.is_some()),
        ("curve_preferences", tls.curve_preferences.is_some()),
        ("client_allowed_sans", tls.client_allowed_sans.is_some()),
    ] {
        if set {
            return Err(err(key, "not supported by mmuscope (rustls uses its own safe defaults); remove it".into()));
        }
    }
    if tls.prefer_server_cipher_suites.is_some() {
        tracing::warn!("web config {}: tls_server_config.prefer_server_cipher_suites is ignored", config.display());
    }
    let certs = match (&tls.cert_file, &tls.cert) {
        (Some(f), None) => read_certs(&resolve(config, f)).map_err(|m| err("cert_file", m))?,
        (None, Some(pem)) => parse_certs(pem.as_bytes()).map_err(|m| err("cert", m))?,
        (Some(_), Some(_)) => return Err(err("cert", "give either cert_file or cert, not both".into())),
        (None, None) => return Err(err("cert_file", "required when tls_server_config is present".into())),
    };
    let key = match (&tls.key_file, &tls.key) {
        (Some(f), None) => {
            let p = resolve(config, f);
            let pem = std::fs::read(&p).map_err(|e| err("key_file", format!("{}: {e}", p.display())))?;
            PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| err("key_file", format!("{}: no private key: {e}", p.display())))?
        }
        (None, Some(pem)) => PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| err("key", format!("{e}")))?,
        (Some(_), Some(_)) => return Err(err("key", "give either key_file or key, not both".into())),
        (None, None) => return Err(err("key_file", "required when tls_server_config is present".into())),
    };
    let min = version(tls.min_version.as_deref(), "TLS12").map_err(|m| err("min_version", m))?;
    let max = version(tls.max_version.as_deref(), "TLS13").map_err(|m| err("max_version", m))?;
    if min > max {
        return Err(err("min_version", "is above max_version".into()));
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(12, &TLS12), (13, &TLS13)].into_iter().filter(|(v, _)| (min..=max).contains(v)).map(|(_, p)| p).collect();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err("min_version", e.to_string()))?;
    let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let builder = match auth {
        "NoClientCert" => builder.with_no_client_auth(),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let Some(ca) = &tls.client_ca_file else {
                return Err(err("client_ca_file", format!("required with client_auth_type {auth}")));
            };
            let mut roots = RootCertStore::empty();
            for c in read_certs(&resolve(config, ca)).map_err(|m| err("client_ca_file", m))? {
                roots.add(c).map_err(|e| err("client_ca_file", e.to_string()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if auth == "VerifyClientCertIfGiven" { v.allow_unauthenticated() } else { v };
            builder.with_client_cert_verifier(v.build().map_err(|e| err("client_ca_file", e.to_string()))?)
        }
        "RequestClientCert" | "RequireAnyClientCert" => {
            return Err(err(
                "client_auth_type",
                format!("{auth} accepts unverified certificates and is not supported; use RequireAndVerifyClientCert"),
            ));
        }
        other => {
            return Err(err(
                "client_auth_type",
                format!("unknown value {other:?} (NoClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)"),
            ));
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| err("key_file", format!("does not match the certificate: {e}")))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_certs(&pem).map_err(|m| format!("{}: {m}", path.display()))
}

fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate found".into());
    }
    Ok(certs)
}

/// `TLS12`/`TLS13` → 12/13. TLS 1.0 and 1.1 are not offered by rustls.
fn version(v: Option<&str>, default: &str) -> Result<u8, String> {
    match v.unwrap_or(default) {
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        "TLS10" | "TLS11" => Err("TLS 1.0 and 1.1 are not supported (TLS12 or TLS13)".into()),
        other => Err(format!("unknown value {other:?} (TLS12 or TLS13)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(f: impl FnOnce(&mut TlsServerConfig)) -> String {
        let mut t = TlsServerConfig {
            cert_file: Some("/nonexistent/c.pem".into()),
            key_file: Some("k".into()),
            ..Default::default()
        };
        f(&mut t);
        server_config(Path::new("/etc/web.yml"), &t).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key() {
        assert!(tls(|_| {}).starts_with("web config /etc/web.yml: tls_server_config.cert_file: /nonexistent/c.pem: "));
        assert!(tls(|t| t.cert_file = None).contains("tls_server_config.cert_file: required"));
        assert!(tls(|t| t.cipher_suites = Some(vec![])).contains("tls_server_config.cipher_suites: not supported"));
        assert_eq!(version(Some("TLS13"), "TLS12"), Ok(13));
        assert!(version(Some("TLS11"), "TLS12").is_err());
        assert!(version(Some("x"), "TLS12").is_err());
    }
}
