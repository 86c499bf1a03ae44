//! Whole files in the exporter-toolkit format, loaded as the agent loads them.

use super::*;

/// exporter-toolkit's own example (docs/web-config.yml in prometheus/exporter-toolkit), verbatim.
const TOOLKIT_EXAMPLE: &str = r#"# TLS and basic authentication configuration example.
#
# Additionally, a certificate and a key file are needed.
tls_server_config:
  cert_file: server.crt
  key_file: server.key

# Usernames and passwords required to connect.
# Passwords are hashed with bcrypt: https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md#about-bcrypt.
basic_auth_users:
  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
  bob: $2y$10$hLqFl9jSjoAAy95Z/zw8Ye8wkdMBM8c5Bn1ptYqP/AXyV0.oy0S8m

# Exclude /-/healthy and /-/ready from basic authentication
basic_auth_excluded_paths:
- /-/healthy
- /-/ready
"#;

/// Every key of exporter-toolkit's web-configuration.md at once.
const EVERY_KEY: &str = r#"tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: client-san.pem
  client_allowed_sans: [prometheus.monitoring.svc, ops@example.org]
  min_version: TLS12
  max_version: TLS13
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA]
  prefer_server_cipher_suites: false
  curve_preferences: [X25519, CurveP256, CurveP521]
http_server_config:
  http2: true
  headers:
    Content-Security-Policy: default-src 'self'
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
    X-XSS-Protection: "1; mode=block"
    Strict-Transport-Security: max-age=31536000
basic_auth_users:
  alice: $2y$10$mDwo.lAisC94iLAyP81MCesa29IzH37oigHC/42V2pdJlUprsJPze
rate_limit:
  interval: 1s
  burst: 10
"#;

fn dir_with(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmuscope-webconfig-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in [
        ("server.crt", include_str!("testdata/server.crt")),
        ("server.key", include_str!("testdata/server.key")),
        ("client-san.pem", include_str!("testdata/client-san.pem")),
    ]
    .iter()
    .chain(files)
    {
        std::fs::write(dir.join(file), text).unwrap();
    }
    dir
}

#[test]
fn the_exporter_toolkit_example_loads() {
    let dir = dir_with("example", &[("web.yml", TOOLKIT_EXAMPLE)]);
    let (c, watched) = WebConfig::load(&dir.join("web.yml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.tls.is_some());
    assert!(!c.users.is_empty());
    assert_eq!(c.auth_excluded, ["/-/healthy", "/-/ready"]);
    assert_eq!(watched.len(), 3, "the file, its certificate and key: {watched:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_documented_key_is_accepted() {
    let dir = dir_with("every", &[("web.yml", EVERY_KEY)]);
    let (c, _) = WebConfig::load(&dir.join("web.yml")).unwrap_or_else(|e| panic!("{e}"));
    let tls = c.tls.expect("TLS");
    assert!(!tls.ignore_client_order, "prefer_server_cipher_suites: false");
    assert_eq!(c.headers.len(), 5);
    assert!(c.rate_limit.is_some());
    // Inline PEM instead of files, and the unverified client-certificate types.
    let inline = format!(
        "tls_server_config:\n  cert: |\n{}  key: |\n{}  client_auth_type: RequireAnyClientCert\n  \
         client_allowed_sans: [10.0.0.7]\nrate_limit:\n  interval: 0s\n",
        indent(include_str!("testdata/server.crt")),
        indent(include_str!("testdata/server.key")),
    );
    for (name, text) in [
        ("inline", inline.as_str()),
        (
            "request",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequestClientCert\n",
        ),
    ] {
        let dir = dir_with(name, &[("web.yml", text)]);
        let (c, _) = WebConfig::load(&dir.join("web.yml")).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.tls.is_some() && c.rate_limit.is_none(), "{name}");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_exporter_toolkit_refuses_is_refused_naming_the_key() {
    let cases = [
        ("typo", "tls_server_config:\n  cert_fil: a\n", "tls_server_config.cert_fil: unknown field"),
        ("unknown top level", "basic_auth: {}\n", "basic_auth: unknown field"),
        ("rate typo", "rate_limit:\n  burstt: 1\n", "rate_limit.burstt: unknown field"),
        ("bad interval", "rate_limit:\n  interval: soon\n  burst: 1\n", "rate_limit.interval: invalid duration"),
        (
            "CA without client auth",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_ca_file: client-san.pem\n",
            "tls_server_config.client_ca_file: a client CA is configured but client_auth_type is NoClientCert",
        ),
        (
            "SANs without a required certificate",
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  client_auth_type: RequestClientCert\n  client_allowed_sans: [a]\n",
            "tls_server_config.client_allowed_sans: requires client_auth_type",
        ),
        (
            "excluded path",
            "basic_auth_excluded_paths: [healthz]\n",
            "basic_auth_excluded_paths: \"healthz\" is not a path",
        ),
    ];
    for (name, text, want) in cases {
        let dir = dir_with(name.replace(' ', "-").as_str(), &[("web.yml", text)]);
        let e = WebConfig::load(&dir.join("web.yml")).err().unwrap_or_else(|| panic!("{name}: accepted"));
        assert!(e.to_string().contains(want), "{name}: {e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("    {l}\n")).collect()
}
