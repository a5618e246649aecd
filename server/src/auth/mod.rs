//! etcd's auth: users with bcrypt-hashed passwords, roles with read/write permissions on keys,
//! ranges and prefixes, the `root` user and role, and the auth revision that invalidates
//! tokens issued before a change.
//!
//! The state lives in the store's cluster column family (`auth/...`), so it travels in raft
//! and Maintenance snapshots and survives `snapshot restore`; changes are log commands applied
//! on every member in order. An in-memory copy answers permission checks.

mod apply;
pub mod jwt;
mod perm;
pub mod token;

use std::collections::BTreeMap;
use std::sync::RwLock;

use prost::Message;
use rkv_proto::authpb::{permission::Type as PermType, Permission, Role, User};
use rkv_proto::etcdserverpb::TxnRequest;
use rkv_proto::rkvpb::AuthInfo;
use rkv_storage::Store;

use crate::error::{Result, ServerError};
pub use perm::Access;
pub use token::{SimpleTokens, Tokens};

/// Every auth key of the cluster column family starts with this.
pub const AUTH_PREFIX: &[u8] = b"auth/";
pub(crate) const ENABLED_KEY: &[u8] = b"auth/enabled";
pub(crate) const REVISION_KEY: &[u8] = b"auth/revision";
pub(crate) const USER_PREFIX: &[u8] = b"auth/user/";
pub(crate) const ROLE_PREFIX: &[u8] = b"auth/role/";
pub const ROOT: &str = "root";

#[derive(Debug, Default, Clone)]
struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

pub struct AuthStore {
    state: RwLock<AuthState>,
    pub tokens: Tokens,
    pub bcrypt_cost: u32,
}

fn key(prefix: &[u8], name: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// The auth state as the store keeps it. A member that cannot read it must not serve: it would
/// answer with auth off or without some user's roles.
fn load(store: &Store) -> Result<AuthState> {
    // etcd's auth store starts at revision 1.
    let mut state = AuthState { revision: 1, ..AuthState::default() };
    let corrupt = |what: &str, k: &[u8]| {
        ServerError::Storage(rkv_storage::StorageError::Corrupt(format!(
            "auth {what} {}",
            String::from_utf8_lossy(k)
        )))
    };
    for (k, v) in store.cluster_scan(AUTH_PREFIX)? {
        if k == ENABLED_KEY {
            state.enabled = v == b"1";
        } else if k == REVISION_KEY {
            let bytes = v.as_slice().try_into().map_err(|_| corrupt("revision", &k))?;
            state.revision = u64::from_be_bytes(bytes);
        } else if let Some(name) = k.strip_prefix(USER_PREFIX) {
            let user = User::decode(v.as_slice()).map_err(|_| corrupt("user", &k))?;
            state.users.insert(String::from_utf8_lossy(name).into_owned(), user);
        } else if let Some(name) = k.strip_prefix(ROLE_PREFIX) {
            let role = Role::decode(v.as_slice()).map_err(|_| corrupt("role", &k))?;
            state.roles.insert(String::from_utf8_lossy(name).into_owned(), role);
        }
    }
    Ok(state)
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

impl AuthStore {
    pub fn new(store: &Store, bcrypt_cost: u32, tokens: Tokens) -> Result<Self> {
        Ok(Self { state: RwLock::new(load(store)?), tokens, bcrypt_cost })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AuthState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the state after the store was replaced by a snapshot.
    pub fn reload(&self, store: &Store) -> Result<()> {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = load(store)?;
        self.tokens.clear();
        Ok(())
    }

    pub fn is_enabled(&self) -> bool {
        self.read().enabled
    }

    pub fn revision(&self) -> u64 {
        self.read().revision
    }

    /// The password check an Authenticate does before its token goes through the log.
    /// Returns the auth revision it checked at.
    pub fn check_password(&self, name: &str, password: &str) -> Result<u64> {
        let (hash, revision) = {
            let state = self.read();
            if !state.enabled {
                return Err(ServerError::AuthNotEnabled);
            }
            let user = state.users.get(name).ok_or(ServerError::AuthFailed)?;
            if user.options.as_ref().is_some_and(|o| o.no_password) {
                return Err(ServerError::AuthFailed);
            }
            (String::from_utf8_lossy(&user.password).into_owned(), state.revision)
        };
        // bcrypt is slow on purpose: outside the lock.
        match bcrypt::verify(password, &hash) {
            Ok(true) => Ok(revision),
            _ => Err(ServerError::AuthFailed),
        }
    }

    /// Hashes a password for the log (etcd's hashedPassword: bcrypt at --bcrypt-cost).
    pub fn hash_password(&self, password: &str) -> Result<String> {
        bcrypt::hash(password, self.bcrypt_cost).map_err(|e| ServerError::Internal(format!("bcrypt: {e}")))
    }

    /// The user a token names, at the auth revision it was issued at.
    pub fn token_info(&self, token: &str) -> Result<AuthInfo> {
        self.tokens.info(token).ok_or(ServerError::InvalidAuthToken)
    }

    /// The user a verified client certificate names (its common name), at the current revision.
    pub fn cert_info(&self, common_name: &str) -> AuthInfo {
        AuthInfo { username: common_name.to_string(), revision: self.revision() }
    }

    /// etcd's `IsAdminPermitted`: root role required while auth is enabled.
    pub fn check_admin(&self, who: &AuthInfo) -> Result<()> {
        admin_in(&self.read(), who)
    }

    /// etcd's `isOpPermitted` for one key or range.
    pub fn check(&self, who: &AuthInfo, key: &[u8], range_end: &[u8], access: Access) -> Result<()> {
        let state = self.read();
        check_in(&state, who, &[(key, range_end, access)])
    }

    /// Checks a txn: every compare is a read, every op its own kind, nested txns included.
    pub fn check_txn(&self, who: &AuthInfo, txn: &TxnRequest) -> Result<()> {
        let state = self.read();
        if !state.enabled {
            return Ok(());
        }
        let mut wanted = Vec::new();
        txn_accesses(txn, &mut wanted);
        check_in(&state, who, &wanted)
    }

    /// The user as UserGet shows it (roles sorted); admins may read anyone, others themselves.
    pub fn user(&self, who: &AuthInfo, name: &str) -> Result<Vec<String>> {
        let state = self.read();
        if who.username != name {
            admin_in(&state, who)?;
        }
        let user = state.users.get(name).ok_or(ServerError::UserNotFound)?;
        let mut roles = user.roles.clone();
        roles.sort();
        Ok(roles)
    }

    pub fn users(&self) -> Vec<String> {
        self.read().users.keys().cloned().collect()
    }

    /// A role's permissions; admins may read any role, others the roles they have.
    pub fn role(&self, who: &AuthInfo, name: &str) -> Result<Vec<Permission>> {
        let state = self.read();
        let has = state.users.get(&who.username).is_some_and(|u| u.roles.iter().any(|r| r == name));
        if !has {
            admin_in(&state, who)?;
        }
        let role = state.roles.get(name).ok_or(ServerError::RoleNotFound)?;
        Ok(role.key_permission.clone())
    }

    pub fn roles(&self) -> Vec<String> {
        self.read().roles.keys().cloned().collect()
    }
}

/// What a txn touches: compares read, ops read or write, nested txns recursively.
fn txn_accesses<'a>(txn: &'a TxnRequest, out: &mut Vec<(&'a [u8], &'a [u8], Access)>) {
    use rkv_proto::etcdserverpb::request_op::Request;
    for c in &txn.compare {
        out.push((&c.key, &c.range_end, Access::Read));
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => out.push((&r.key, &r.range_end, Access::Read)),
            Some(Request::RequestPut(p)) => {
                out.push((&p.key, &[], Access::Write));
                if p.prev_kv {
                    out.push((&p.key, &[], Access::Read));
                }
            }
            Some(Request::RequestDeleteRange(d)) => {
                out.push((&d.key, &d.range_end, Access::Write));
                if d.prev_kv {
                    out.push((&d.key, &d.range_end, Access::Read));
                }
            }
            Some(Request::RequestTxn(nested)) => txn_accesses(nested, out),
            None => {}
        }
    }
}

fn admin_in(state: &AuthState, who: &AuthInfo) -> Result<()> {
    if !state.enabled {
        return Ok(());
    }
    if who.username.is_empty() {
        return Err(ServerError::UserEmpty);
    }
    let user = state.users.get(&who.username).ok_or(ServerError::UserNotFound)?;
    if has_root_role(user) {
        Ok(())
    } else {
        Err(ServerError::PermissionDenied)
    }
}

/// Whether `who` may do every access in `wanted`, under `state`.
fn check_in(state: &AuthState, who: &AuthInfo, wanted: &[(&[u8], &[u8], Access)]) -> Result<()> {
    if !state.enabled {
        return Ok(());
    }
    if who.username.is_empty() {
        return Err(ServerError::UserEmpty);
    }
    if who.revision < state.revision {
        return Err(ServerError::AuthOldRevision);
    }
    let user = state.users.get(&who.username).ok_or(ServerError::PermissionDenied)?;
    if has_root_role(user) {
        return Ok(());
    }
    let perms: Vec<&Permission> =
        user.roles.iter().filter_map(|r| state.roles.get(r)).flat_map(|r| r.key_permission.iter()).collect();
    for (key, range_end, access) in wanted {
        let granted = perms
            .iter()
            .filter(|p| access.granted_by(p.perm_type()))
            .map(|p| (p.key.as_slice(), p.range_end.as_slice()));
        if !perm::covers(granted, key, range_end) {
            return Err(ServerError::PermissionDenied);
        }
    }
    Ok(())
}

impl Access {
    fn granted_by(self, t: PermType) -> bool {
        matches!(
            (self, t),
            (_, PermType::Readwrite) | (Access::Read, PermType::Read) | (Access::Write, PermType::Write)
        )
    }
}
