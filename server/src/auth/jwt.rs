//! etcd's JWT tokens (`--auth-token jwt,pub-key=...,priv-key=...,sign-method=RS256,ttl=5m`):
//! signed claims `{"exp", "revision", "username"}` that every member holding the public key
//! verifies on its own, without any shared token table. As in etcd, a member with only the
//! public key verifies but cannot issue tokens, and a token stays valid until it expires (an
//! auth change makes it stale through its revision, not by revoking it).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use rkv_proto::rkvpb::AuthInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde::{Deserialize, Serialize};

pub use crate::config::JwtOptions;

/// etcd's errors for bad JWT options (server/auth/options.go).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("auth: invalid auth signature method")]
    InvalidMethod,
    #[error("auth: missing key data")]
    MissingKey,
    #[error("auth: public and private keys don't match")]
    KeyMismatch,
    #[error("auth: cannot read {path}: {reason}")]
    Key { path: String, reason: String },
}

#[derive(Serialize, Deserialize)]
struct Claims {
    exp: u64,
    revision: u64,
    username: String,
}

pub struct JwtTokens {
    algorithm: Algorithm,
    /// None: verify only (only a public key was given).
    signing: Option<EncodingKey>,
    verifying: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

fn read(path: &Path) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path).map_err(|e| JwtError::Key { path: path.display().to_string(), reason: e.to_string() })
}

fn bad_key(path: &Path, e: impl std::fmt::Display) -> JwtError {
    JwtError::Key { path: path.display().to_string(), reason: e.to_string() }
}

/// The public key of a private key in PEM, in the DER form `DecodingKey` takes for `algorithm`.
fn public_of(algorithm: Algorithm, pem: &[u8], path: &Path) -> Result<Vec<u8>, JwtError> {
    use ring::signature::{self, KeyPair};
    let der = PrivateKeyDer::from_pem_slice(pem).map_err(|e| bad_key(path, e))?;
    let rng = ring::rand::SystemRandom::new();
    let public = match (algorithm, &der) {
        (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512, PrivateKeyDer::Pkcs1(k))
        | (Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512, PrivateKeyDer::Pkcs1(k)) => {
            signature::RsaKeyPair::from_der(k.secret_pkcs1_der()).map(|p| p.public().as_ref().to_vec())
        }
        (Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512, PrivateKeyDer::Pkcs8(k))
        | (Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512, PrivateKeyDer::Pkcs8(k)) => {
            signature::RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map(|p| p.public().as_ref().to_vec())
        }
        (Algorithm::ES256, PrivateKeyDer::Pkcs8(k)) => signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            k.secret_pkcs8_der(),
            &rng,
        )
        .map(|p| p.public_key().as_ref().to_vec()),
        (Algorithm::ES384, PrivateKeyDer::Pkcs8(k)) => signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            k.secret_pkcs8_der(),
            &rng,
        )
        .map(|p| p.public_key().as_ref().to_vec()),
        (Algorithm::EdDSA, PrivateKeyDer::Pkcs8(k)) => {
            signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(k.secret_pkcs8_der())
                .map(|p| p.public_key().as_ref().to_vec())
        }
        _ => return Err(bad_key(path, "not a PKCS#8 (or, for RSA, PKCS#1) key of the sign method's kind")),
    };
    public.map_err(|e| bad_key(path, e))
}

fn decoding_from_der(algorithm: Algorithm, der: &[u8]) -> DecodingKey {
    match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_der(der),
        Algorithm::EdDSA => DecodingKey::from_ed_der(der),
        _ => DecodingKey::from_rsa_der(der),
    }
}

impl JwtTokens {
    pub fn new(opts: &JwtOptions) -> Result<Self, JwtError> {
        let algorithm: Algorithm = opts.sign_method.parse().map_err(|_| JwtError::InvalidMethod)?;
        let (signing, verifying) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                // etcd signs HMAC tokens with the priv-key file's bytes as the secret.
                let path = opts.priv_key.as_ref().ok_or(JwtError::MissingKey)?;
                let secret = read(path)?;
                (Some(EncodingKey::from_secret(&secret)), DecodingKey::from_secret(&secret))
            }
            _ => {
                let private = opts.priv_key.as_ref().map(|p| read(p).map(|pem| (p, pem))).transpose()?;
                let public = opts.pub_key.as_ref().map(|p| read(p).map(|pem| (p, pem))).transpose()?;
                let signing = match &private {
                    None => None,
                    Some((path, pem)) => Some(
                        match algorithm {
                            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem),
                            Algorithm::EdDSA => EncodingKey::from_ed_pem(pem),
                            _ => EncodingKey::from_rsa_pem(pem),
                        }
                        .map_err(|e| bad_key(path, e))?,
                    ),
                };
                let derived =
                    private.as_ref().map(|(path, pem)| public_of(algorithm, pem, path)).transpose()?;
                let given = match &public {
                    None => None,
                    Some((path, pem)) => Some(
                        match algorithm {
                            Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                            Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                            _ => DecodingKey::from_rsa_pem(pem),
                        }
                        .map_err(|e| bad_key(path, e))?,
                    ),
                };
                let verifying = match (given, derived) {
                    (None, None) => return Err(JwtError::MissingKey),
                    (Some(given), None) => given,
                    (None, Some(der)) => decoding_from_der(algorithm, &der),
                    (Some(given), Some(_)) => {
                        // The two keys must be one pair: a token this member signs must verify.
                        let probe = Self::sign_with(algorithm, signing.as_ref(), "probe", 0, opts.ttl);
                        let mut validation = Validation::new(algorithm);
                        validation.leeway = 0;
                        if probe
                            .is_none_or(|t| jsonwebtoken::decode::<Claims>(&t, &given, &validation).is_err())
                        {
                            return Err(JwtError::KeyMismatch);
                        }
                        given
                    }
                };
                (signing, verifying)
            }
        };
        let mut validation = Validation::new(algorithm);
        // golang-jwt, which etcd uses, allows no leeway on `exp`.
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        Ok(Self { algorithm, signing, verifying, validation, ttl: opts.ttl })
    }

    fn sign_with(
        algorithm: Algorithm,
        key: Option<&EncodingKey>,
        username: &str,
        revision: u64,
        ttl: Duration,
    ) -> Option<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let claims = Claims { exp: (now + ttl).as_secs(), revision, username: username.to_string() };
        // Built by hand rather than with `encode` so that the header reads as golang-jwt's
        // (etcd's): {"alg":...,"typ":"JWT"}; the claims serialize in Go's sorted map order.
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let header = b64(format!(r#"{{"alg":"{algorithm:?}","typ":"JWT"}}"#).as_bytes());
        let claims = b64(&serde_json::to_vec(&claims).ok()?);
        let message = format!("{header}.{claims}");
        let signature = jsonwebtoken::crypto::sign(message.as_bytes(), key?, algorithm).ok()?;
        Some(format!("{message}.{signature}"))
    }

    /// A token for `username` at auth `revision`; None on a verify-only member.
    pub fn sign(&self, username: &str, revision: u64) -> Option<String> {
        Self::sign_with(self.algorithm, self.signing.as_ref(), username, revision, self.ttl)
    }

    /// The user and revision of a token with a valid signature that has not expired.
    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.verifying, &self.validation).ok()?;
        Some(AuthInfo { username: data.claims.username, revision: data.claims.revision })
    }
}
