//! etcdctl's transport security: --cacert, --cert, --key, --insecure-skip-tls-verify and
//! --insecure-transport, with the Go client's rules for when a connection uses TLS.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{CtlError, EXIT_BAD_ARGS};

#[derive(Debug, Clone, Default)]
pub struct TlsFlags {
    pub cacert: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub insecure_transport: bool,
}

impl TlsFlags {
    /// Whether the flags ask for TLS on endpoints written without a scheme (the Go client
    /// sets up TLS when any file is given or --insecure-transport=false).
    fn wanted(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some() || !self.insecure_transport
    }

    /// The rustls configuration the flags describe.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, CtlError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        // Like etcdctl, skipping verification needs a TLS configuration from the flags: an
        // https endpoint alone gets Go's default one, which verifies.
        let builder = if self.insecure_skip_tls_verify && self.wanted() {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoServerVerification::new(&provider)))
        } else {
            let mut roots = RootCertStore::empty();
            match &self.cacert {
                Some(path) => {
                    for cert in read_certs(path)? {
                        roots.add(cert).map_err(tls_error)?;
                    }
                }
                // The system's trusted roots, as Go's default TLS configuration has.
                None => {
                    for cert in rustls_native_certs::load_native_certs().certs {
                        let _ = roots.add(cert);
                    }
                }
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
                builder.with_client_auth_cert(read_certs(cert)?, key).map_err(tls_error)?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(CtlError::new(EXIT_BAD_ARGS, "--cert and --key must be given together")),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// The URI to dial and whether it takes TLS: `http://` never does, `https://` always, and
    /// a bare `host:port` when the flags ask for it. The URI is always http: with TLS the
    /// connector does the handshake, and tonic refuses an https URI it does not secure itself.
    pub fn endpoint(&self, ep: &str) -> (String, bool) {
        if ep.starts_with("http://") {
            (ep.to_string(), false)
        } else if let Some(rest) = ep.strip_prefix("https://") {
            (format!("http://{rest}"), true)
        } else {
            (format!("http://{ep}"), self.wanted())
        }
    }
}

fn tls_error(e: rustls::Error) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, format!("TLS: {e}"))
}

fn file_error(path: &str, e: rustls::pki_types::pem::Error) -> CtlError {
    CtlError::new(EXIT_BAD_ARGS, format!("open {path}: {e}"))
}

fn read_certs(path: &str) -> Result<Vec<CertificateDer<'static>>, CtlError> {
    CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))
}

/// A verifier's handshake-signature methods, checked with the algorithms in field `$algorithms`
/// as rustls' WebPKI verifiers check them. rustls names its free functions after the trait
/// methods, so one template serves TLS 1.2 and TLS 1.3. (The server's TLS module has the same
/// macro: rctl depends on no rkv crate but the proto one.)
macro_rules! check_signatures_with {
    ($algorithms:ident) => {
        check_signatures_with!($algorithms: verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$algorithms.supported_schemes()
        }
    };
    ($algorithms:ident: $($verify:ident),+) => {
        $(
            fn $verify(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                rustls::crypto::$verify(message, cert, dss, &self.$algorithms)
            }
        )+
    };
}

/// --insecure-skip-tls-verify: any server certificate is accepted (signatures still checked).
#[derive(Debug)]
struct NoServerVerification {
    signature_algorithms: WebPkiSupportedAlgorithms,
}

impl NoServerVerification {
    fn new(provider: &CryptoProvider) -> Self {
        Self { signature_algorithms: provider.signature_verification_algorithms }
    }
}

impl ServerCertVerifier for NoServerVerification {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    check_signatures_with!(signature_algorithms);
}

/// A tonic connector: TCP within the dial timeout, then the TLS handshake.
pub fn connector(
    config: Arc<ClientConfig>,
    dial_timeout: Duration,
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
            let tcp = tokio::time::timeout(dial_timeout, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "dial timeout"))??;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(host).map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = connector.connect(name, tcp).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}
