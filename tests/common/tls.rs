//! Certificates for the TLS tests, generated per test: CAs and leaf certificates (server
//! names 127.0.0.1 and localhost, client and server usage) written as PEM files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use super::cluster::Cluster;
use super::{Rkv, Url};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};

/// Serial numbers for issued certificates, unique within a test process.
static SERIAL: AtomicU64 = AtomicU64::new(1000);

pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    pub cert: PathBuf,
}

/// A certificate and its key, as files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub serial: u64,
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
        self.issue_as(cn, cn)
    }

    /// Like `issue`, with the files named after `stem` (for two certificates of one name).
    pub fn issue_as(&self, cn: &str, stem: &str) -> Pair {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .unwrap_or_else(|e| panic!("{e}"));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("{e}"));
        let pair = Pair {
            cert: self.dir.join(format!("{stem}.pem")),
            key: self.dir.join(format!("{stem}-key.pem")),
            serial,
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&pair.key, key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
        pair
    }
}

impl Ca {
    /// A PEM revocation list of this CA that revokes `revoked`.
    pub fn crl(&self, revoked: &[&Pair]) -> PathBuf {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2124, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|p| RevokedCertParams {
                    serial_number: SerialNumber::from(p.serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer).unwrap_or_else(|e| panic!("{e}"));
        let path = self.dir.join("ca.crl");
        std::fs::write(&path, crl.pem().unwrap_or_else(|e| panic!("{e}"))).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

/// `--flag=path` for a command line.
pub fn flag(name: &str, path: &Path) -> String {
    format!("--{name}={}", path.display())
}

/// A member serving clients over https with `extra` flags (its certificate among them, or
/// --auto-tls), once it is ready; and its client URL.
pub fn tls_member(dir: &Path, extra: &[&str]) -> (Rkv, Url) {
    let mut rkv = Rkv::new(dir, extra);
    rkv.client_scheme = "https";
    let offset = rkv.launch();
    rkv.wait_ready(offset);
    let url = Url(format!("https://127.0.0.1:{}", rkv.port));
    (rkv, url)
}

/// A member serving clients over https with a "server" certificate of `ca`, requiring a client
/// certificate `ca` signed (--client-cert-auth), with `extra` flags; and its client URL.
pub fn client_cert_auth_member(dir: &Path, ca: &Ca, extra: &[&str]) -> (Rkv, Url) {
    let server = ca.issue("server");
    let flags =
        [flag("cert-file", &server.cert), flag("key-file", &server.key), flag("trusted-ca-file", &ca.cert)];
    let flags: Vec<&str> =
        flags.iter().map(String::as_str).chain(["--client-cert-auth"]).chain(extra.iter().copied()).collect();
    tls_member(dir, &flags)
}

/// A cluster of `n` members on https peer URLs, each presenting `peer` and requiring a
/// certificate `ca` signed from the others (--peer-client-cert-auth), with `extra` flags.
pub fn peer_tls_cluster(dir: &Path, n: usize, ca: &Ca, peer: &Pair, extra: &[&str]) -> Cluster {
    let flags = [
        flag("peer-cert-file", &peer.cert),
        flag("peer-key-file", &peer.key),
        flag("peer-trusted-ca-file", &ca.cert),
    ];
    let flags: Vec<&str> = flags
        .iter()
        .map(String::as_str)
        .chain(["--peer-client-cert-auth"])
        .chain(extra.iter().copied())
        .collect();
    Cluster::start_on(dir, n, "https", &flags)
}

/// curl with `pair` as its client certificate and `extra` options (-k: the server is not
/// verified); its exit code says whether the TLS handshake, and so the request, went through.
pub fn curl(url: &str, pair: &Pair, extra: &[&str]) -> Output {
    Command::new("curl")
        .args(["-s", "--max-time", "10"])
        .args(extra)
        .arg("--cert")
        .arg(&pair.cert)
        .arg("--key")
        .arg(&pair.key)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("curl: {e}"))
}
