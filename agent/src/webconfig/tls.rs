//! `tls_server_config` → a rustls server configuration (ring provider; TLS 1.2 and 1.3).

use std::{path::Path, sync::Arc};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
    version::{TLS12, TLS13},
};

use super::{
    client_auth::{self, AllowedSans, AnyCert},
    file::{TlsServerConfig, WebConfigError, resolve},
};

/// Files a TLS configuration reads (watched for changes so certificates rotate without a restart).
pub fn files(config: &Path, tls: &TlsServerConfig) -> Vec<std::path::PathBuf> {
    [&tls.cert_file, &tls.key_file, &tls.client_ca_file].into_iter().flatten().map(|f| resolve(config, f)).collect()
}

pub fn server_config(config: &Path, tls: &TlsServerConfig) -> Result<Arc<ServerConfig>, WebConfigError> {
    let err = |key: &str, msg: String| WebConfigError::new(config, format!("tls_server_config.{key}"), msg);
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
    let mut provider = rustls::crypto::ring::default_provider();
    super::suites::restrict(config, &mut provider, tls.cipher_suites.as_deref(), tls.curve_preferences.as_deref())?;
    let provider = Arc::new(provider);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| err("min_version", e.to_string()))?;
    let verifier = client_verifier(config, tls, &provider)?;
    let mut cfg = builder
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err("key_file", format!("does not match the certificate: {e}")))?;
    // Go's default, as exporter-toolkit's: the server's order of cipher_suites wins.
    cfg.ignore_client_order = tls.prefer_server_cipher_suites.unwrap_or(true);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// `client_auth_type` with `client_ca_file`/`client_ca` and `client_allowed_sans`, with exporter-toolkit's rules.
fn client_verifier(
    config: &Path,
    tls: &TlsServerConfig,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, WebConfigError> {
    let err = |key: &str, msg: String| WebConfigError::new(config, format!("tls_server_config.{key}"), msg);
    let auth = tls.client_auth_type.as_deref().unwrap_or("NoClientCert");
    let ca = match (&tls.client_ca_file, &tls.client_ca) {
        (Some(f), _) => Some(read_certs(&resolve(config, f)).map_err(|m| err("client_ca_file", m))?),
        (None, Some(pem)) => Some(parse_certs(pem.as_bytes()).map_err(|m| err("client_ca", m))?),
        (None, None) => None,
    };
    let any = |mandatory| -> Arc<dyn ClientCertVerifier> {
        Arc::new(AnyCert { mandatory, algorithms: provider.signature_verification_algorithms })
    };
    let verifier: Arc<dyn ClientCertVerifier> = match auth {
        "NoClientCert" | "" if ca.is_some() => {
            return Err(err("client_ca_file", "a client CA is configured but client_auth_type is NoClientCert".into()));
        }
        "NoClientCert" | "" => WebPkiClientVerifier::no_client_auth(),
        "RequestClientCert" => any(false),
        "RequireAnyClientCert" | "RequireClientCert" => any(true),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let Some(ca) = ca else {
                return Err(err("client_ca_file", format!("required with client_auth_type {auth}")));
            };
            let mut roots = RootCertStore::empty();
            for c in ca {
                roots.add(c).map_err(|e| err("client_ca_file", e.to_string()))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let v = if auth == "VerifyClientCertIfGiven" { v.allow_unauthenticated() } else { v };
            v.build().map_err(|e| err("client_ca_file", e.to_string()))?
        }
        other => {
            return Err(err(
                "client_auth_type",
                format!(
                    "unknown value {other:?} (NoClientCert, RequestClientCert, RequireAnyClientCert, \
                     VerifyClientCertIfGiven, RequireAndVerifyClientCert)"
                ),
            ));
        }
    };
    if matches!(auth, "RequestClientCert" | "RequireAnyClientCert" | "RequireClientCert") {
        tracing::warn!(
            "web config {}: tls_server_config.client_auth_type {auth} accepts client certificates from any issuer; \
             RequireAndVerifyClientCert with client_ca_file verifies them",
            config.display()
        );
    }
    let Some(allowed) = tls.client_allowed_sans.clone() else { return Ok(verifier) };
    if !matches!(auth, "RequireAnyClientCert" | "RequireClientCert" | "RequireAndVerifyClientCert") {
        return Err(err(
            "client_allowed_sans",
            "requires client_auth_type RequireAnyClientCert or RequireAndVerifyClientCert".into(),
        ));
    }
    let never = client_auth::unmatchable(&allowed);
    if !never.is_empty() {
        tracing::warn!(
            "web config {}: tls_server_config.client_allowed_sans: e-mail SANs are not matched by mmuscope: {}",
            config.display(),
            never.join(", ")
        );
    }
    Ok(Arc::new(AllowedSans { inner: verifier, allowed }))
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
        let e = tls(|t| t.client_auth_type = Some("Sometimes".into()));
        assert!(e.contains("/nonexistent/c.pem"), "certificates are read first: {e}");
        assert_eq!(version(Some("TLS13"), "TLS12"), Ok(13));
        assert!(version(Some("TLS11"), "TLS12").is_err());
        assert!(version(Some("x"), "TLS12").is_err());
    }
}
