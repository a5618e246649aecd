//! etcd's auth: users with bcrypt-hashed passwords, roles with read/write permissions on keys,
//! ranges and prefixes, the `root` user and role, and the auth revision that invalidates
//! tokens issued before a change.
//!
//! The state lives in the store's cluster column family (`auth/...`), so it travels in raft
//! and Maintenance snapshots and survives `snapshot restore`; changes are log commands applied
//! on every member in order. An in-memory copy answers permission checks.

pub mod jwt;
mod perm;
pub mod token;

use std::collections::BTreeMap;
use std::sync::RwLock;

use prost::Message;
use rkv_proto::authpb::{permission::Type as PermType, Permission, Role, User, UserAddOptions};
use rkv_proto::etcdserverpb::TxnRequest;
use rkv_proto::rkvpb::{auth_command::Request as AuthRequest, AuthInfo};
use rkv_storage::{Store, Writer};

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

fn load(store: &Store) -> AuthState {
    // etcd's auth store starts at revision 1.
    let mut state = AuthState { revision: 1, ..AuthState::default() };
    let Ok(entries) = store.cluster_scan(AUTH_PREFIX) else {
        tracing::error!("cannot read the auth state");
        return state;
    };
    for (k, v) in entries {
        if k == ENABLED_KEY {
            state.enabled = v == b"1";
        } else if k == REVISION_KEY {
            state.revision = v.as_slice().try_into().map(u64::from_be_bytes).unwrap_or(0);
        } else if let Some(name) = k.strip_prefix(USER_PREFIX) {
            if let Ok(user) = User::decode(v.as_slice()) {
                state.users.insert(String::from_utf8_lossy(name).into_owned(), user);
            }
        } else if let Some(name) = k.strip_prefix(ROLE_PREFIX) {
            if let Ok(role) = Role::decode(v.as_slice()) {
                state.roles.insert(String::from_utf8_lossy(name).into_owned(), role);
            }
        }
    }
    state
}

fn has_root_role(user: &User) -> bool {
    user.roles.iter().any(|r| r == ROOT)
}

impl AuthStore {
    pub fn new(store: &Store, bcrypt_cost: u32, tokens: Tokens) -> Self {
        Self { state: RwLock::new(load(store)), tokens, bcrypt_cost }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, AuthState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the state after the store was replaced by a snapshot.
    pub fn reload(&self, store: &Store) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = load(store);
        self.tokens.clear();
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

    /// Applies one auth command, in log order on every member. Returns the token for
    /// Authenticate.
    /// `who` is None for the member's own commands, which need no permission.
    pub fn apply(
        &self,
        writer: &mut Writer<'_>,
        who: Option<&AuthInfo>,
        request: &AuthRequest,
    ) -> Result<Option<String>> {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if let (Some(who), false) = (who, matches!(request, AuthRequest::Authenticate(_))) {
            admin_in(&state, who)?;
        }
        let mut changed_users = Vec::new();
        let mut changed_roles = Vec::new();
        match request {
            AuthRequest::Enable(_) => {
                if state.enabled {
                    return Ok(None);
                }
                let root = state.users.get(ROOT).ok_or(ServerError::RootUserNotExist)?;
                if !has_root_role(root) {
                    return Err(ServerError::RootRoleNotExist);
                }
                state.enabled = true;
                writer.put_cluster(ENABLED_KEY, b"1")?;
                self.tokens.clear();
                // etcd's enable does not move the auth revision (disable does).
                return Ok(None);
            }
            AuthRequest::Disable(_) => {
                if !state.enabled {
                    return Ok(None);
                }
                state.enabled = false;
                writer.put_cluster(ENABLED_KEY, b"0")?;
                self.tokens.clear();
            }
            AuthRequest::Authenticate(a) => {
                if !state.enabled {
                    return Err(ServerError::AuthNotEnabled);
                }
                let user = state.users.get(&a.name).ok_or(ServerError::AuthFailed)?;
                if user.options.as_ref().is_some_and(|o| o.no_password) {
                    return Err(ServerError::AuthFailed);
                }
                let info = AuthInfo { username: a.name.clone(), revision: state.revision };
                // etcd's ErrVerifyOnly: a member given only the public JWT key.
                let token = self.tokens.assign(&a.token, info).ok_or_else(|| {
                    ServerError::Unknown("auth: token signing attempted with verify-only key".into())
                })?;
                return Ok(Some(token));
            }
            AuthRequest::UserAdd(r) => {
                if r.name.is_empty() {
                    return Err(ServerError::UserEmpty);
                }
                if state.users.contains_key(&r.name) {
                    return Err(ServerError::UserAlreadyExist);
                }
                let options = r.options.unwrap_or(UserAddOptions { no_password: false });
                let password =
                    if options.no_password { Vec::new() } else { r.hashed_password.as_bytes().to_vec() };
                let user = User {
                    name: r.name.as_bytes().to_vec(),
                    password,
                    roles: Vec::new(),
                    options: Some(options),
                };
                state.users.insert(r.name.clone(), user);
                changed_users.push(r.name.clone());
            }
            AuthRequest::UserDelete(r) => {
                if state.enabled && r.name == ROOT {
                    return Err(ServerError::InvalidAuthMgmt);
                }
                if state.users.remove(&r.name).is_none() {
                    return Err(ServerError::UserNotFound);
                }
                writer.delete_cluster(&key(USER_PREFIX, &r.name))?;
                self.tokens.revoke_user(&r.name);
            }
            AuthRequest::UserChangePassword(r) => {
                let user = state.users.get_mut(&r.name).ok_or(ServerError::UserNotFound)?;
                // A user added with --no-password keeps none (etcd ignores the new one).
                if !user.options.as_ref().is_some_and(|o| o.no_password) {
                    user.password = r.hashed_password.as_bytes().to_vec();
                }
                changed_users.push(r.name.clone());
                self.tokens.revoke_user(&r.name);
            }
            AuthRequest::UserGrantRole(r) => {
                if !state.users.contains_key(&r.user) {
                    return Err(ServerError::UserNotFound);
                }
                if r.role != ROOT && !state.roles.contains_key(&r.role) {
                    return Err(ServerError::RoleNotFound);
                }
                let user = state.users.get_mut(&r.user).ok_or(ServerError::UserNotFound)?;
                if user.roles.contains(&r.role) {
                    // etcd answers a repeated grant without an error or a new revision.
                    return Ok(None);
                }
                user.roles.push(r.role.clone());
                user.roles.sort();
                changed_users.push(r.user.clone());
            }
            AuthRequest::UserRevokeRole(r) => {
                if state.enabled && r.name == ROOT && r.role == ROOT {
                    return Err(ServerError::InvalidAuthMgmt);
                }
                let user = state.users.get_mut(&r.name).ok_or(ServerError::UserNotFound)?;
                let before = user.roles.len();
                user.roles.retain(|role| role != &r.role);
                if user.roles.len() == before {
                    return Err(ServerError::RoleNotGranted);
                }
                changed_users.push(r.name.clone());
            }
            AuthRequest::RoleAdd(r) => {
                if r.name.is_empty() {
                    return Err(ServerError::RoleEmpty);
                }
                if state.roles.contains_key(&r.name) {
                    return Err(ServerError::RoleAlreadyExist);
                }
                state.roles.insert(
                    r.name.clone(),
                    Role { name: r.name.as_bytes().to_vec(), key_permission: Vec::new() },
                );
                changed_roles.push(r.name.clone());
            }
            AuthRequest::RoleDelete(r) => {
                if state.enabled && r.role == ROOT {
                    return Err(ServerError::InvalidAuthMgmt);
                }
                if state.roles.remove(&r.role).is_none() {
                    return Err(ServerError::RoleNotFound);
                }
                writer.delete_cluster(&key(ROLE_PREFIX, &r.role))?;
                // The role goes from every user that had it.
                for (name, user) in state.users.iter_mut() {
                    if user.roles.contains(&r.role) {
                        user.roles.retain(|role| role != &r.role);
                        changed_users.push(name.clone());
                    }
                }
            }
            AuthRequest::RoleGrantPermission(r) => {
                let perm = r.perm.clone().ok_or(ServerError::PermissionNotGiven)?;
                let role = state.roles.get_mut(&r.name).ok_or(ServerError::RoleNotFound)?;
                // etcd keeps permissions sorted by key and replaces one with the same range.
                match role
                    .key_permission
                    .iter_mut()
                    .find(|p| p.key == perm.key && p.range_end == perm.range_end)
                {
                    Some(existing) => existing.perm_type = perm.perm_type,
                    None => {
                        role.key_permission.push(perm);
                        role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                changed_roles.push(r.name.clone());
            }
            AuthRequest::RoleRevokePermission(r) => {
                let role = state.roles.get_mut(&r.role).ok_or(ServerError::RoleNotFound)?;
                let before = role.key_permission.len();
                role.key_permission.retain(|p| !(p.key == r.key && p.range_end == r.range_end));
                if role.key_permission.len() == before {
                    return Err(ServerError::PermissionNotGranted);
                }
                changed_roles.push(r.role.clone());
            }
        }
        for name in changed_users {
            if let Some(user) = state.users.get(&name) {
                writer.put_cluster(&key(USER_PREFIX, &name), &user.encode_to_vec())?;
            }
        }
        for name in changed_roles {
            if let Some(role) = state.roles.get(&name) {
                writer.put_cluster(&key(ROLE_PREFIX, &name), &role.encode_to_vec())?;
            }
        }
        state.revision += 1;
        writer.put_cluster(REVISION_KEY, &state.revision.to_be_bytes())?;
        Ok(None)
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
