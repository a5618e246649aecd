//! `--auth-token`: `simple`, or `jwt,` with its options, parsed into plain values that the auth
//! layer turns into a token provider.

use std::path::PathBuf;
use std::time::Duration;

use super::parse::parse_go_duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthToken {
    Simple,
    Jwt(JwtOptions),
}

/// The options of `--auth-token jwt,...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtOptions {
    pub pub_key: Option<PathBuf>,
    pub priv_key: Option<PathBuf>,
    pub sign_method: String,
    pub ttl: Duration,
}

/// etcd's default JWT lifetime.
const DEFAULT_TTL: Duration = Duration::from_secs(5 * 60);

/// etcd's errors for a bad `--auth-token` (server/auth/options.go, embed/config.go).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthTokenError {
    /// etcd logs the unknown type and fails with its generic options error.
    #[error("auth: invalid auth options")]
    UnknownType,
    #[error("failed to create a JWT token provider: {0}")]
    Jwt(JwtOptionsError),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtOptionsError {
    #[error("auth: invalid auth options")]
    InvalidOptions,
    #[error("auth: invalid auth signature method")]
    InvalidMethod,
}

impl AuthToken {
    pub fn parse(flag: &str) -> Result<Self, AuthTokenError> {
        match flag.split_once(',').unwrap_or((flag, "")) {
            ("simple", _) => Ok(AuthToken::Simple),
            ("jwt", options) => Ok(AuthToken::Jwt(JwtOptions::parse(options).map_err(AuthTokenError::Jwt)?)),
            _ => Err(AuthTokenError::UnknownType),
        }
    }
}

impl JwtOptions {
    /// Parses the options after `jwt,` (comma-separated `name=value`).
    pub fn parse(options: &str) -> Result<Self, JwtOptionsError> {
        let mut opts =
            JwtOptions { pub_key: None, priv_key: None, sign_method: String::new(), ttl: DEFAULT_TTL };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (name, value) = option.split_once('=').ok_or(JwtOptionsError::InvalidOptions)?;
            match name {
                "pub-key" => opts.pub_key = Some(PathBuf::from(value)),
                "priv-key" => opts.priv_key = Some(PathBuf::from(value)),
                "sign-method" => opts.sign_method = value.to_string(),
                "ttl" => opts.ttl = parse_go_duration(value).ok_or(JwtOptionsError::InvalidOptions)?,
                _ => return Err(JwtOptionsError::InvalidOptions),
            }
        }
        if opts.sign_method.is_empty() {
            return Err(JwtOptionsError::InvalidMethod);
        }
        Ok(opts)
    }
}
