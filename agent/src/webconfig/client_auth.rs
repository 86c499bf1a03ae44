//! Client-certificate policies beyond rustls' CA verifier, as exporter-toolkit (Go's crypto/tls) has them:
//! `RequestClientCert` and `RequireAnyClientCert` ask for (or require) a certificate without checking who issued it
//! — the handshake signature is still verified, so the client holds the certificate's key — and
//! `client_allowed_sans`, which only admits certificates carrying one of the listed subject alternative names.

use std::{net::IpAddr, sync::Arc};

use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    crypto::WebPkiSupportedAlgorithms,
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

/// Any certificate, unverified (Go's `RequestClientCert` when not `mandatory`, `RequireAnyClientCert` when).
#[derive(Debug)]
pub struct AnyCert {
    pub mandatory: bool,
    pub algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `inner`, and then the certificate must carry one of `allowed` as a DNS, IP or URI subject alternative name.
#[derive(Debug)]
pub struct AllowedSans {
    pub inner: Arc<dyn ClientCertVerifier>,
    pub allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if has_allowed_san(end_entity, &self.allowed) {
            Ok(verified)
        } else {
            tracing::debug!("client certificate refused: none of client_allowed_sans among its SANs");
            Err(Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Whether `cert` has one of `allowed` as a SAN, compared exactly as exporter-toolkit does (DNS names and URIs as
/// strings, IP addresses as addresses). E-mail SANs cannot be read here: [`unmatchable`] names those entries.
pub fn has_allowed_san(cert: &CertificateDer<'_>, allowed: &[String]) -> bool {
    let Ok(cert) = webpki::EndEntityCert::try_from(cert) else { return false };
    let dns: Vec<&str> = cert.valid_dns_names().collect();
    let uris: Vec<&str> = cert.valid_uri_names().collect();
    allowed.iter().any(|a| {
        dns.contains(&a.as_str())
            || uris.contains(&a.as_str())
            || a.parse::<IpAddr>()
                .is_ok_and(|ip| cert.verify_is_valid_for_subject_name(&ServerName::IpAddress(ip.into())).is_ok())
    })
}

/// Entries of `client_allowed_sans` that can never match here (e-mail addresses).
pub fn unmatchable(allowed: &[String]) -> Vec<&str> {
    allowed.iter().map(String::as_str).filter(|a| a.contains('@') && !a.contains(':')).collect()
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject;

    use super::*;

    #[test]
    fn sans_match_exactly() {
        let cert = CertificateDer::from_pem_slice(include_bytes!("testdata/client-san.pem")).unwrap();
        let ok = |s: &[&str]| has_allowed_san(&cert, &s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(ok(&["other", "prometheus.monitoring.svc"]));
        assert!(ok(&["10.0.0.7"]));
        assert!(ok(&["spiffe://cluster.local/ns/monitoring/sa/prometheus"]));
        assert!(!ok(&["monitoring.svc", "10.0.0.8", "prometheus", "spiffe://cluster.local"]));
        assert!(!ok(&[]));
        assert_eq!(unmatchable(&["ops@example.org".into(), "a.b".into(), "mailto:x@y".into()]), ["ops@example.org"]);
    }
}
