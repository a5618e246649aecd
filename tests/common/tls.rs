//! Certificates for the TLS tests, generated per test: CAs and leaf certificates (server
//! names 127.0.0.1 and localhost, client and server usage) written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    pub cert: PathBuf,
}

/// A certificate and its key, as files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} CA"));
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.self_signed(&key).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&path, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        Ca { issuer: Issuer::new(params, key), dir: dir.to_path_buf(), cert: path }
    }

    /// A certificate with common name `cn`, valid for 127.0.0.1 and localhost, for servers
    /// and clients alike (as etcd's peer certificates are).
    pub fn issue(&self, cn: &str) -> Pair {
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("{e}"));
        let pair =
            Pair { cert: self.dir.join(format!("{cn}.pem")), key: self.dir.join(format!("{cn}-key.pem")) };
        std::fs::write(&pair.cert, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&pair.key, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        pair
    }
}

/// `--flag=path` for a command line.
pub fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}
