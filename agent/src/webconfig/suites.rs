//! `tls_server_config.cipher_suites` and `curve_preferences` (Go's names) → the rustls provider's cipher suites and
//! key-exchange groups, in the order given. Names Go accepts but rustls does not offer (CBC suites, P-521) are
//! skipped with a warning; names Go does not know are errors, as in exporter-toolkit.

use std::path::Path;

use rustls::{NamedGroup, ProtocolVersion, crypto::CryptoProvider};

use super::file::WebConfigError;

/// Go's `tls.CipherSuites()` for TLS 1.2 (the names exporter-toolkit accepts), and its TLS 1.3 suites (accepted, not
/// configurable: Go ignores them in this list too).
const GO_TLS12: &[&str] = &[
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
];
const GO_TLS13: &[&str] = &["TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"];
/// Go's curve names as exporter-toolkit accepts them.
const GO_CURVES: &[(&str, NamedGroup)] = &[
    ("CurveP256", NamedGroup::secp256r1),
    ("CurveP384", NamedGroup::secp384r1),
    ("CurveP521", NamedGroup::secp521r1),
    ("X25519", NamedGroup::X25519),
];

/// Restricts `provider` to `cipher_suites` (TLS 1.2; TLS 1.3 suites stay) and `curve_preferences`, in their order.
pub fn restrict(
    config: &Path,
    provider: &mut CryptoProvider,
    cipher_suites: Option<&[String]>,
    curves: Option<&[String]>,
) -> Result<(), WebConfigError> {
    let warn =
        |key: &str, what: &str| tracing::warn!("web config {}: tls_server_config.{key}: {what}", config.display());
    if let Some(names) = cipher_suites.filter(|n| !n.is_empty()) {
        let mut tls12 = Vec::new();
        for name in names {
            let found = provider.cipher_suites.iter().find(|s| {
                s.version().version == ProtocolVersion::TLSv1_2 && format!("{:?}", s.suite()) == name.as_str()
            });
            match found {
                Some(s) => tls12.push(*s),
                None if GO_TLS13.contains(&name.as_str()) => {
                    warn("cipher_suites", &format!("{name} ignored: TLS 1.3 suites are not configurable (as in Go)"))
                }
                None if GO_TLS12.contains(&name.as_str()) => {
                    warn("cipher_suites", &format!("{name} ignored: not offered by rustls (mmuscope's TLS library)"))
                }
                None => {
                    let e = format!("unknown cipher {name:?} (Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)");
                    return Err(WebConfigError::new(config, "tls_server_config.cipher_suites", e));
                }
            }
        }
        if tls12.is_empty() {
            warn("cipher_suites", "none of the listed suites is available; TLS 1.2 uses rustls' default suites");
        } else {
            provider.cipher_suites.retain(|s| s.version().version != ProtocolVersion::TLSv1_2);
            provider.cipher_suites.extend(tls12);
        }
    }
    if let Some(names) = curves.filter(|n| !n.is_empty()) {
        let mut groups = Vec::new();
        for name in names {
            let Some((_, group)) = GO_CURVES.iter().find(|(n, _)| n == name) else {
                let e = format!("unknown curve {name:?} (CurveP256, CurveP384, CurveP521, X25519)");
                return Err(WebConfigError::new(config, "tls_server_config.curve_preferences", e));
            };
            match provider.kx_groups.iter().find(|g| g.name() == *group) {
                Some(g) => groups.push(*g),
                None => warn("curve_preferences", &format!("{name} ignored: not offered by rustls")),
            }
        }
        if groups.is_empty() {
            warn("curve_preferences", "none of the listed curves is available; rustls' default groups are used");
        } else {
            provider.kx_groups = groups;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suites_and_curves_in_the_given_order() {
        let mut p = rustls::crypto::ring::default_provider();
        let suites = names(&[
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
            "TLS_RSA_WITH_AES_128_CBC_SHA",
            "TLS_AES_128_GCM_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        ]);
        let curves = names(&["CurveP521", "CurveP384", "X25519"]);
        restrict(Path::new("w.yml"), &mut p, Some(&suites), Some(&curves)).unwrap();
        let tls12: Vec<String> = p
            .cipher_suites
            .iter()
            .filter(|s| s.version().version == ProtocolVersion::TLSv1_2)
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(tls12, ["TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]);
        assert!(p.cipher_suites.iter().any(|s| s.version().version == ProtocolVersion::TLSv1_3));
        let groups: Vec<NamedGroup> = p.kx_groups.iter().map(|g| g.name()).collect();
        assert_eq!(groups, [NamedGroup::secp384r1, NamedGroup::X25519]);

        let e = restrict(Path::new("w.yml"), &mut p, Some(&names(&["TLS_MADE_UP"])), None).unwrap_err();
        assert!(e.to_string().contains("tls_server_config.cipher_suites: unknown cipher \"TLS_MADE_UP\""), "{e}");
        let e = restrict(Path::new("w.yml"), &mut p, None, Some(&names(&["CurveP999"]))).unwrap_err();
        assert!(e.to_string().contains("tls_server_config.curve_preferences: unknown curve"), "{e}");
    }
}
