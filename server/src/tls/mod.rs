//! TLS on the client and peer URLs, with rustls and its ring provider: etcd's --cert-file,
//! --key-file, --trusted-ca-file, --client-cert-auth and --auto-tls, and their --peer-*
//! twins. Servers offer h2 and http/1.1 by ALPN (grpc-go refuses a TLS server without h2).

mod checks;
mod verifiers;

pub use checks::{check_cipher_suites, AllowedIdentity};

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use verifiers::{IdentityVerifier, NoServerVerification};

/// One side's TLS flags (client or peer).
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub trusted_ca: Option<PathBuf>,
    /// Require a certificate signed by `trusted_ca` from the other side.
    pub client_cert_auth: bool,
    /// Without cert and key: a self-signed certificate generated in the data dir.
    pub auto_tls: bool,
    /// Certificates revoked by this list are refused (--client-crl-file, --peer-crl-file).
    pub crl: Option<PathBuf>,
    /// Whom the other side's certificate must name.
    pub allowed: AllowedIdentity,
}

impl TlsFiles {
    /// Whether this side can serve TLS (files given, or generated).
    pub fn configured(&self) -> bool {
        (self.cert.is_some() && self.key.is_some()) || self.auto_tls
    }
}

/// `--tls-min-version` / `--tls-max-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TlsVersions {
    pub allow_12: bool,
    pub allow_13: bool,
}

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Pem {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS client verifier: {0}")]
    Verifier(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The client verifier for one side: the CA, its revocation list, the allowed identity.
fn client_verifier(
    files: &TlsFiles,
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone());
    if let Some(crl) = &files.crl {
        // etcd looks each presented certificate's serial up in the list; intermediates without
        // a list of their own are not refused for it.
        builder = builder
            .with_crls(checks::crls(crl)?)
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status();
    }
    let inner = builder.build().map_err(|e| TlsError::Verifier(e.to_string()))?;
    if files.allowed.is_empty() {
        return Ok(inner);
    }
    Ok(Arc::new(IdentityVerifier::new(inner, files.allowed.clone(), &provider)))
}

fn versions(v: TlsVersions) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut out = Vec::new();
    if v.allow_13 {
        out.push(&rustls::version::TLS13);
    }
    if v.allow_12 {
        out.push(&rustls::version::TLS12);
    }
    out
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem { path: path.display().to_string(), source };
    let certs =
        CertificateDer::pem_file_iter(path).map_err(pem)?.collect::<Result<Vec<_>, _>>().map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|source| TlsError::Pem { path: path.display().to_string(), source })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert)?;
    }
    Ok(roots)
}

/// The certificate and key files to serve with: the given ones, or (auto TLS) a self-signed
/// pair generated once in `generated_dir` for `hosts`, as etcd's fixtures.
fn cert_and_key(
    files: &TlsFiles,
    generated_dir: &Path,
    hosts: &[String],
) -> Result<(PathBuf, PathBuf), TlsError> {
    if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
        return Ok((cert.clone(), key.clone()));
    }
    let (cert, key) = (generated_dir.join("cert.pem"), generated_dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    let generated =
        rcgen::generate_simple_self_signed(hosts.to_vec()).map_err(|e| TlsError::Generate(e.to_string()))?;
    let write = |path: &Path, text: String| {
        std::fs::write(path, text)
            .map_err(|source| TlsError::Write { path: path.display().to_string(), source })
    };
    crate::identity::create_private_dir(generated_dir)
        .map_err(|source| TlsError::Write { path: generated_dir.display().to_string(), source })?;
    write(&key, generated.signing_key.serialize_pem())?;
    restrict(&key);
    write(&cert, generated.cert.pem())?;
    Ok((cert, key))
}

#[cfg(unix)]
fn restrict(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
fn restrict(_: &Path) {}

/// The acceptor for one side's TLS listeners.
pub fn acceptor(
    files: &TlsFiles,
    versions_allowed: TlsVersions,
    cipher_suites: &[String],
    generated_dir: &Path,
    hosts: &[String],
) -> Result<TlsAcceptor, TlsError> {
    let (cert_path, key_path) = cert_and_key(files, generated_dir, hosts)?;
    let provider = Arc::new(checks::provider_with(cipher_suites));
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(versions_allowed))?;
    let builder = match (&files.trusted_ca, files.client_cert_auth) {
        (Some(ca), true) => builder.with_client_cert_verifier(client_verifier(files, ca, provider)?),
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs(&cert_path)?, key(&key_path)?)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// How this member connects to other members' https peer URLs: trusting the peer CA, showing
/// its own peer certificate; with peer auto TLS and no CA, without verifying (as etcd does).
pub fn peer_client_config(
    files: &TlsFiles,
    cipher_suites: &[String],
    generated_dir: &Path,
    hosts: &[String],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(checks::provider_with(cipher_suites));
    let builder =
        ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &files.trusted_ca {
        Some(ca) if !files.allowed.is_empty() => {
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            let verifier = IdentityVerifier::new(inner, files.allowed.clone(), &provider);
            builder.dangerous().with_custom_certificate_verifier(Arc::new(verifier))
        }
        Some(ca) => builder.with_root_certificates(roots(ca)?),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoServerVerification::new(&provider))),
    };
    let mut config = if files.configured() {
        let (cert, key_path) = cert_and_key(files, generated_dir, hosts)?;
        builder.with_client_auth_cert(certs(&cert)?, key(&key_path)?)?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A tonic connector for https URLs: TCP, then the TLS handshake with `config`.
pub fn connector(
    config: Arc<ClientConfig>,
) -> impl tower::Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone
       + Send {
    let connector = TlsConnector::from(config);
    tower::service_fn(move |uri: http::Uri| {
        let connector = connector.clone();
        async move {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']).to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "tcp connect timeout"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}
