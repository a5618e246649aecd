//! What etcd checks beyond the chain of trust: revoked certificates (--client-crl-file,
//! --peer-crl-file), the peer's common name or host name (--peer-cert-allowed-cn,
//! --peer-cert-allowed-hostname, --client-cert-allowed-hostname), and the TLS 1.2 cipher
//! suites offered (--cipher-suites, Go's names). The verifiers that apply the identity check are
//! in `verifiers.rs`.

use std::net::IpAddr;
use std::path::Path;

use rustls::crypto::ring::cipher_suite as suite;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use rustls::SupportedCipherSuite;

use super::TlsError;

/// Who a certificate must name, beyond being trusted (etcd's AllowedCN / AllowedHostname).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIdentity {
    pub common_name: Option<String>,
    pub hostname: Option<String>,
}

impl AllowedIdentity {
    pub fn is_empty(&self) -> bool {
        self.common_name.is_none() && self.hostname.is_none()
    }

    /// etcd's VerifyPeerCertificate: the leaf's subject CN equals the allowed CN, or the leaf
    /// is valid for the allowed host name (a DNS or IP subject alternative name).
    pub(super) fn check(&self, leaf: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.is_empty() {
            return Ok(());
        }
        let refused = || rustls::Error::General("client certificate authentication failed".into());
        let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|_| refused())?;
        if let Some(cn) = &self.common_name {
            let names: Vec<&str> =
                cert.subject().iter_common_name().filter_map(|n| n.as_str().ok()).collect();
            if names.first() != Some(&cn.as_str()) {
                return Err(refused());
            }
        }
        if let Some(host) = &self.hostname {
            let ip: Option<IpAddr> = host.parse().ok();
            let sans = cert.subject_alternative_name().ok().flatten();
            let matches = sans.is_some_and(|san| {
                san.value.general_names.iter().any(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => dns_matches(dns, host),
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        ip.is_some_and(|ip| ip_bytes(ip) == *bytes)
                    }
                    _ => false,
                })
            });
            if !matches {
                return Err(refused());
            }
        }
        Ok(())
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Go's VerifyHostname for DNS names: case-insensitive, a leading `*.` matches one label.
fn dns_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.trim_end_matches('.').to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(rest) => host.split_once('.').is_some_and(|(label, tail)| !label.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// Revocation lists from a file of PEM blocks or one DER list (Go's x509.ParseCRL takes both).
pub fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { path: path.display().to_string(), source };
    let bytes = std::fs::read(path)
        .map_err(|e| TlsError::Verifier(format!("cannot read {}: {e}", path.display())))?;
    let from_pem: Vec<_> =
        CertificateRevocationListDer::pem_slice_iter(&bytes).collect::<Result<_, _>>().map_err(pem)?;
    if from_pem.is_empty() {
        return Ok(vec![CertificateRevocationListDer::from(bytes)]);
    }
    Ok(from_pem)
}

/// Go's names for the TLS 1.2 suites rustls offers (with Go's older CHACHA20 aliases).
fn tls12_suite(name: &str) -> Option<SupportedCipherSuite> {
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// Suites Go (and so etcd) accepts by name that rustls does not implement: CBC, RC4, 3DES
/// and RSA key exchange, and the TLS 1.3 suites, which are not configurable in Go either.
const GO_ONLY_SUITES: [&str; 19] = [
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// Checks a --cipher-suites list as etcd does; returns the names rustls cannot offer (they are
/// skipped with a warning at start).
pub fn check_cipher_suites(names: &[String], only_tls13: bool) -> Result<Vec<String>, String> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    if only_tls13 {
        return Err("cipher suites cannot be configured when only TLS1.3 or greater is supported".into());
    }
    let mut skipped = Vec::new();
    for name in names {
        if tls12_suite(name).is_some() {
            continue;
        }
        if !GO_ONLY_SUITES.contains(&name.as_str()) {
            return Err(format!("unexpected TLS cipher suite {name:?}"));
        }
        skipped.push(name.clone());
    }
    Ok(skipped)
}

/// The ring provider limited to the TLS 1.2 suites named (all TLS 1.3 suites stay, as in Go).
pub fn provider_with(names: &[String]) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if !names.is_empty() {
        let wanted: Vec<SupportedCipherSuite> = names.iter().filter_map(|n| tls12_suite(n)).collect();
        provider.cipher_suites.retain(|s| s.tls13().is_some() || wanted.contains(s));
    }
    provider
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_match_as_go_does() {
        assert!(dns_matches("etcd.example.com", "ETCD.example.com."));
        assert!(dns_matches("*.example.com", "m1.example.com"));
        assert!(!dns_matches("*.example.com", "a.m1.example.com"));
        assert!(!dns_matches("*.example.com", "example.com"));
    }

    #[test]
    fn cipher_suite_names() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_cipher_suites(&names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]), false),
            Ok(vec![])
        );
        assert_eq!(
            check_cipher_suites(&names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]), false),
            Ok(names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]))
        );
        assert_eq!(
            check_cipher_suites(&names(&["TLS_NOPE"]), false),
            Err("unexpected TLS cipher suite \"TLS_NOPE\"".to_string())
        );
        assert!(check_cipher_suites(&names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]), true).is_err());
        let p = provider_with(&names(&["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]));
        assert_eq!(p.cipher_suites.iter().filter(|s| s.tls13().is_none()).count(), 1);
    }
}
