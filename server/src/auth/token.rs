//! etcd's simple tokens: a random prefix chosen by the member that proposes an Authenticate
//! plus the entry's position, assigned on every member when the entry applies, valid for
//! --auth-token-ttl after their last use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;
use rkv_proto::rkvpb::AuthInfo;

use super::jwt::JwtTokens;

/// The token provider `--auth-token` chose.
pub enum Tokens {
    Simple(SimpleTokens),
    Jwt(Box<JwtTokens>),
}

impl Tokens {
    /// What the proposer of an Authenticate puts in the log: a simple token's text (every
    /// member assigns it), or nothing for a JWT, which is signed when the entry applies.
    pub fn generate(&self) -> String {
        match self {
            Tokens::Simple(s) => s.generate(),
            Tokens::Jwt(_) => String::new(),
        }
    }

    /// Issues the token an applied Authenticate answers with; None when this member cannot
    /// sign (a JWT provider with only a public key).
    pub fn assign(&self, proposed: &str, info: AuthInfo) -> Option<String> {
        match self {
            Tokens::Simple(s) => {
                s.assign(proposed, info);
                Some(proposed.to_string())
            }
            Tokens::Jwt(j) => j.sign(&info.username, info.revision),
        }
    }

    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        match self {
            Tokens::Simple(s) => s.info(token),
            Tokens::Jwt(j) => j.info(token),
        }
    }

    /// Simple tokens of a deleted or changed user stop working at once; a JWT lives until it
    /// expires (its revision makes it stale), as in etcd.
    pub fn revoke_user(&self, name: &str) {
        if let Tokens::Simple(s) = self {
            s.revoke_user(name);
        }
    }

    pub fn clear(&self) {
        if let Tokens::Simple(s) = self {
            s.clear();
        }
    }
}

pub struct SimpleTokens {
    ttl: Duration,
    tokens: Mutex<HashMap<String, (AuthInfo, Instant)>>,
}

const TOKEN_LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

impl SimpleTokens {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, tokens: Mutex::default() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (AuthInfo, Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token: 16 random letters and a unique suffix, as etcd's look.
    pub fn generate(&self) -> String {
        let mut rng = rand::rng();
        let prefix: String =
            (0..16).map(|_| TOKEN_LETTERS[rng.random_range(0..TOKEN_LETTERS.len())] as char).collect();
        format!("{prefix}.{}", rng.random_range(1..u32::MAX))
    }

    pub fn assign(&self, token: &str, info: AuthInfo) {
        let mut tokens = self.lock();
        let now = Instant::now();
        tokens.retain(|_, (_, used)| now.duration_since(*used) < self.ttl);
        tokens.insert(token.to_string(), (info, now));
    }

    /// The user behind a live token, whose lifetime starts over.
    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        let mut tokens = self.lock();
        let entry = tokens.get_mut(token)?;
        if entry.1.elapsed() >= self.ttl {
            tokens.remove(token);
            return None;
        }
        entry.1 = Instant::now();
        Some(entry.0.clone())
    }

    pub fn revoke_user(&self, name: &str) {
        self.lock().retain(|_, (info, _)| info.username != name);
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}
