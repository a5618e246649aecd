//! The rustls certificate verifiers etcd's TLS flags call for beyond rustls' own: one that also
//! checks the allowed identity (--client-cert-allowed-hostname, --peer-cert-allowed-cn,
//! --peer-cert-allowed-hostname), and one that trusts any certificate an auto-TLS peer shows.
//! They differ only in what they make of the certificate: every one of them checks the
//! handshake signature (does the peer hold the certificate's key?) as rustls' WebPKI verifiers
//! do, so that half is written once, by `check_signatures_with!`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use super::AllowedIdentity;

/// A verifier's handshake-signature methods, checked with the algorithms in field `$algorithms`
/// as rustls' WebPKI verifiers check them. rustls names its free functions after the trait
/// methods, so one template serves TLS 1.2 and TLS 1.3.
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

/// A client or server verifier that also checks the allowed identity of the certificate it
/// accepts (etcd's VerifyPeerCertificate after the chain of trust).
#[derive(Debug)]
pub struct IdentityVerifier<V: ?Sized> {
    inner: Arc<V>,
    allowed: AllowedIdentity,
    signature_algorithms: WebPkiSupportedAlgorithms,
}

impl<V: ?Sized> IdentityVerifier<V> {
    /// `inner` must have been built with `provider`: the handshake signatures are checked with
    /// the provider's algorithms, which is what `inner` would do.
    pub fn new(inner: Arc<V>, allowed: AllowedIdentity, provider: &CryptoProvider) -> Self {
        Self { inner, allowed, signature_algorithms: provider.signature_verification_algorithms }
    }
}

impl<V: ClientCertVerifier + ?Sized> ClientCertVerifier for IdentityVerifier<V> {
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
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    check_signatures_with!(signature_algorithms);
}

impl<V: ServerCertVerifier + ?Sized> ServerCertVerifier for IdentityVerifier<V> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)?;
        self.allowed.check(end_entity)?;
        Ok(verified)
    }

    check_signatures_with!(signature_algorithms);
}

/// Accepts any server certificate: etcd's behaviour towards auto-TLS peers (signatures are
/// still checked).
#[derive(Debug)]
pub struct NoServerVerification {
    signature_algorithms: WebPkiSupportedAlgorithms,
}

impl NoServerVerification {
    pub fn new(provider: &CryptoProvider) -> Self {
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
