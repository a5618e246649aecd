//! The auth commands as the log applies them, on every member in the same order: each checks
//! its request against the state, changes the state, and says whether the auth revision moves.
//! A command that fails changes nothing durable and never moves the revision.

use prost::Message;
use rkv_proto::authpb::{Role, User, UserAddOptions};
use rkv_proto::etcdserverpb::{
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use rkv_proto::rkvpb::{auth_command::Request as AuthRequest, AuthInfo, AuthenticateCommand};
use rkv_storage::Writer;

use super::{
    admin_in, has_root_role, key, AuthState, AuthStore, Tokens, ENABLED_KEY, REVISION_KEY, ROLE_PREFIX, ROOT,
    USER_PREFIX,
};
use crate::error::{Result, ServerError};

/// How an applied command ends.
enum Applied {
    /// The auth revision stays: the command changed nothing, or was enable (which etcd does not
    /// count).
    SameRevision,
    /// The auth revision moves, invalidating every token issued before, once these users and
    /// roles are written back (a command writes its own deletions).
    NewRevision { users: Vec<String>, roles: Vec<String> },
}

impl Applied {
    fn nothing_to_write() -> Self {
        Applied::NewRevision { users: Vec::new(), roles: Vec::new() }
    }

    fn user(name: &str) -> Self {
        Applied::NewRevision { users: vec![name.to_string()], roles: Vec::new() }
    }

    fn role(name: &str) -> Self {
        Applied::NewRevision { users: Vec::new(), roles: vec![name.to_string()] }
    }
}

impl AuthStore {
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
        let tokens = &self.tokens;
        let applied = match request {
            AuthRequest::Authenticate(a) => return state.authenticate(a, tokens).map(Some),
            AuthRequest::Enable(_) => state.enable(writer, tokens)?,
            AuthRequest::Disable(_) => state.disable(writer, tokens)?,
            AuthRequest::UserAdd(r) => state.user_add(r)?,
            AuthRequest::UserDelete(r) => state.user_delete(r, writer, tokens)?,
            AuthRequest::UserChangePassword(r) => state.user_change_password(r, tokens)?,
            AuthRequest::UserGrantRole(r) => state.user_grant_role(r)?,
            AuthRequest::UserRevokeRole(r) => state.user_revoke_role(r)?,
            AuthRequest::RoleAdd(r) => state.role_add(r)?,
            AuthRequest::RoleDelete(r) => state.role_delete(r, writer)?,
            AuthRequest::RoleGrantPermission(r) => state.role_grant_permission(r)?,
            AuthRequest::RoleRevokePermission(r) => state.role_revoke_permission(r)?,
        };
        if let Applied::NewRevision { users, roles } = applied {
            state.write_back(writer, &users, &roles)?;
            state.revision += 1;
            writer.put_cluster(REVISION_KEY, &state.revision.to_be_bytes())?;
        }
        Ok(None)
    }
}

impl AuthState {
    fn write_back(&self, writer: &mut Writer<'_>, users: &[String], roles: &[String]) -> Result<()> {
        for name in users {
            if let Some(user) = self.users.get(name) {
                writer.put_cluster(&key(USER_PREFIX, name), &user.encode_to_vec())?;
            }
        }
        for name in roles {
            if let Some(role) = self.roles.get(name) {
                writer.put_cluster(&key(ROLE_PREFIX, name), &role.encode_to_vec())?;
            }
        }
        Ok(())
    }

    // Enable, disable, authenticate.

    fn enable(&mut self, writer: &mut Writer<'_>, tokens: &Tokens) -> Result<Applied> {
        if self.enabled {
            return Ok(Applied::SameRevision);
        }
        let root = self.users.get(ROOT).ok_or(ServerError::RootUserNotExist)?;
        if !has_root_role(root) {
            return Err(ServerError::RootRoleNotExist);
        }
        self.enabled = true;
        writer.put_cluster(ENABLED_KEY, b"1")?;
        tokens.clear();
        // etcd's enable does not move the auth revision (disable does).
        Ok(Applied::SameRevision)
    }

    fn disable(&mut self, writer: &mut Writer<'_>, tokens: &Tokens) -> Result<Applied> {
        if !self.enabled {
            return Ok(Applied::SameRevision);
        }
        self.enabled = false;
        writer.put_cluster(ENABLED_KEY, b"0")?;
        tokens.clear();
        Ok(Applied::nothing_to_write())
    }

    /// Assigns the proposer's token on every member; the auth state itself does not change.
    fn authenticate(&self, a: &AuthenticateCommand, tokens: &Tokens) -> Result<String> {
        if !self.enabled {
            return Err(ServerError::AuthNotEnabled);
        }
        let user = self.users.get(&a.name).ok_or(ServerError::AuthFailed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(ServerError::AuthFailed);
        }
        let info = AuthInfo { username: a.name.clone(), revision: self.revision };
        // etcd's ErrVerifyOnly: a member given only the public JWT key.
        tokens
            .assign(&a.token, info)
            .ok_or_else(|| ServerError::Unknown("auth: token signing attempted with verify-only key".into()))
    }

    // Users.

    fn user_add(&mut self, r: &AuthUserAddRequest) -> Result<Applied> {
        if r.name.is_empty() {
            return Err(ServerError::UserEmpty);
        }
        if self.users.contains_key(&r.name) {
            return Err(ServerError::UserAlreadyExist);
        }
        let options = r.options.unwrap_or(UserAddOptions { no_password: false });
        let password = if options.no_password { Vec::new() } else { r.hashed_password.as_bytes().to_vec() };
        let user =
            User { name: r.name.as_bytes().to_vec(), password, roles: Vec::new(), options: Some(options) };
        self.users.insert(r.name.clone(), user);
        Ok(Applied::user(&r.name))
    }

    fn user_delete(
        &mut self,
        r: &AuthUserDeleteRequest,
        writer: &mut Writer<'_>,
        tokens: &Tokens,
    ) -> Result<Applied> {
        if self.enabled && r.name == ROOT {
            return Err(ServerError::InvalidAuthMgmt);
        }
        if self.users.remove(&r.name).is_none() {
            return Err(ServerError::UserNotFound);
        }
        writer.delete_cluster(&key(USER_PREFIX, &r.name))?;
        tokens.revoke_user(&r.name);
        Ok(Applied::nothing_to_write())
    }

    fn user_change_password(
        &mut self,
        r: &AuthUserChangePasswordRequest,
        tokens: &Tokens,
    ) -> Result<Applied> {
        let user = self.users.get_mut(&r.name).ok_or(ServerError::UserNotFound)?;
        // A user added with --no-password keeps none (etcd ignores the new one).
        if !user.options.as_ref().is_some_and(|o| o.no_password) {
            user.password = r.hashed_password.as_bytes().to_vec();
        }
        tokens.revoke_user(&r.name);
        Ok(Applied::user(&r.name))
    }

    fn user_grant_role(&mut self, r: &AuthUserGrantRoleRequest) -> Result<Applied> {
        if !self.users.contains_key(&r.user) {
            return Err(ServerError::UserNotFound);
        }
        if r.role != ROOT && !self.roles.contains_key(&r.role) {
            return Err(ServerError::RoleNotFound);
        }
        let user = self.users.get_mut(&r.user).ok_or(ServerError::UserNotFound)?;
        if user.roles.contains(&r.role) {
            // etcd answers a repeated grant without an error or a new revision.
            return Ok(Applied::SameRevision);
        }
        user.roles.push(r.role.clone());
        user.roles.sort();
        Ok(Applied::user(&r.user))
    }

    fn user_revoke_role(&mut self, r: &AuthUserRevokeRoleRequest) -> Result<Applied> {
        if self.enabled && r.name == ROOT && r.role == ROOT {
            return Err(ServerError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(&r.name).ok_or(ServerError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|role| role != &r.role);
        if user.roles.len() == before {
            return Err(ServerError::RoleNotGranted);
        }
        Ok(Applied::user(&r.name))
    }

    // Roles.

    fn role_add(&mut self, r: &AuthRoleAddRequest) -> Result<Applied> {
        if r.name.is_empty() {
            return Err(ServerError::RoleEmpty);
        }
        if self.roles.contains_key(&r.name) {
            return Err(ServerError::RoleAlreadyExist);
        }
        self.roles
            .insert(r.name.clone(), Role { name: r.name.as_bytes().to_vec(), key_permission: Vec::new() });
        Ok(Applied::role(&r.name))
    }

    /// The role also goes from every user that had it.
    fn role_delete(&mut self, r: &AuthRoleDeleteRequest, writer: &mut Writer<'_>) -> Result<Applied> {
        if self.enabled && r.role == ROOT {
            return Err(ServerError::InvalidAuthMgmt);
        }
        if self.roles.remove(&r.role).is_none() {
            return Err(ServerError::RoleNotFound);
        }
        writer.delete_cluster(&key(ROLE_PREFIX, &r.role))?;
        let mut users = Vec::new();
        for (name, user) in self.users.iter_mut() {
            if user.roles.contains(&r.role) {
                user.roles.retain(|role| role != &r.role);
                users.push(name.clone());
            }
        }
        Ok(Applied::NewRevision { users, roles: Vec::new() })
    }

    /// etcd keeps permissions sorted by key and replaces one with the same range.
    fn role_grant_permission(&mut self, r: &AuthRoleGrantPermissionRequest) -> Result<Applied> {
        let perm = r.perm.clone().ok_or(ServerError::PermissionNotGiven)?;
        let role = self.roles.get_mut(&r.name).ok_or(ServerError::RoleNotFound)?;
        match role.key_permission.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end) {
            Some(existing) => existing.perm_type = perm.perm_type,
            None => {
                role.key_permission.push(perm);
                role.key_permission.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        Ok(Applied::role(&r.name))
    }

    fn role_revoke_permission(&mut self, r: &AuthRoleRevokePermissionRequest) -> Result<Applied> {
        let role = self.roles.get_mut(&r.role).ok_or(ServerError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission.retain(|p| !(p.key == r.key && p.range_end == r.range_end));
        if role.key_permission.len() == before {
            return Err(ServerError::PermissionNotGranted);
        }
        Ok(Applied::role(&r.role))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rkv_proto::authpb::{permission::Type as PermType, Permission};
    use rkv_proto::etcdserverpb::{AuthDisableRequest, AuthEnableRequest};
    use rkv_storage::{AppliedIndex, Durability, Store};

    use super::*;
    use crate::auth::SimpleTokens;

    fn user_add(name: &str, no_password: bool) -> AuthRequest {
        AuthRequest::UserAdd(AuthUserAddRequest {
            name: name.into(),
            hashed_password: "$hash".into(),
            options: Some(UserAddOptions { no_password }),
            ..Default::default()
        })
    }

    fn user_delete(name: &str) -> AuthRequest {
        AuthRequest::UserDelete(AuthUserDeleteRequest { name: name.into() })
    }

    fn change_password(name: &str) -> AuthRequest {
        AuthRequest::UserChangePassword(AuthUserChangePasswordRequest {
            name: name.into(),
            hashed_password: "$new".into(),
            ..Default::default()
        })
    }

    fn grant_role(user: &str, role: &str) -> AuthRequest {
        AuthRequest::UserGrantRole(AuthUserGrantRoleRequest { user: user.into(), role: role.into() })
    }

    fn revoke_role(name: &str, role: &str) -> AuthRequest {
        AuthRequest::UserRevokeRole(AuthUserRevokeRoleRequest { name: name.into(), role: role.into() })
    }

    fn role_add(name: &str) -> AuthRequest {
        AuthRequest::RoleAdd(AuthRoleAddRequest { name: name.into() })
    }

    fn role_delete(role: &str) -> AuthRequest {
        AuthRequest::RoleDelete(AuthRoleDeleteRequest { role: role.into() })
    }

    fn grant_permission(name: &str, key: &str, perm: Option<PermType>) -> AuthRequest {
        let perm = perm.map(|t| Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: b"c".to_vec(),
        });
        AuthRequest::RoleGrantPermission(AuthRoleGrantPermissionRequest { name: name.into(), perm })
    }

    fn revoke_permission(role: &str, key: &str) -> AuthRequest {
        AuthRequest::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: role.into(),
            key: key.as_bytes().to_vec(),
            range_end: b"c".to_vec(),
        })
    }

    fn authenticate(name: &str, token: &str) -> AuthRequest {
        AuthRequest::Authenticate(AuthenticateCommand { name: name.into(), token: token.into() })
    }

    /// The state as the Auth API shows it, to compare the applied state with its reload.
    fn shown(auth: &AuthStore) -> String {
        let anyone = AuthInfo::default();
        let users: Vec<String> = auth
            .users()
            .iter()
            .map(|u| format!("{u}{:?}", auth.user(&anyone, u).unwrap_or_default()))
            .collect();
        let roles: Vec<String> = auth
            .roles()
            .iter()
            .map(|r| format!("{r}{:?}", auth.role(&anyone, r).unwrap_or_default()))
            .collect();
        format!("enabled {} revision {} users {users:?} roles {roles:?}", auth.is_enabled(), auth.revision())
    }

    /// Each command's answer, the auth revision after it, and how many of the tokens issued so far
    /// still work: a failed command moves nothing; enable, a repeated enable or disable and a
    /// repeated role grant keep the revision; every other change moves it by one.
    #[test]
    fn each_command_answers_and_moves_the_auth_revision_as_etcd() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let tokens = || Tokens::Simple(SimpleTokens::new(Duration::from_secs(300)));
        let auth = AuthStore::new(&store, 4, tokens()).unwrap_or_else(|e| panic!("{e}"));
        let enable = || AuthRequest::Enable(AuthEnableRequest {});
        let disable = || AuthRequest::Disable(AuthDisableRequest {});
        let read = Some(PermType::Read);
        let cases: Vec<(Option<&str>, AuthRequest, &str)> = vec![
            (None, role_add(""), "role name is empty; revision 1"),
            (None, user_add("root", false), "ok; revision 2"),
            (None, enable(), "root user does not have root role; revision 2"),
            (None, grant_role("root", "root"), "ok; revision 3"),
            (None, grant_role("root", "root"), "ok; revision 3"),
            (None, enable(), "ok; revision 3"),
            (None, enable(), "ok; revision 3"),
            (Some("alice"), user_add("carol", false), "user name not found; revision 3"),
            (Some(""), user_add("carol", false), "user name is empty; revision 3"),
            (Some("root"), user_add("", false), "user name is empty; revision 3"),
            (Some("root"), user_add("alice", true), "ok; revision 4"),
            (Some("root"), user_add("alice", false), "user name already exists; revision 4"),
            (
                None,
                authenticate("alice", "t0"),
                "authentication failed, invalid user ID or password; revision 4",
            ),
            (
                None,
                authenticate("nobody", "t0"),
                "authentication failed, invalid user ID or password; revision 4",
            ),
            (None, user_add("bob", false), "ok; revision 5"),
            (None, user_add("carol", false), "ok; revision 6"),
            (Some("alice"), authenticate("bob", "t1"), "token t1; revision 6; 1 live"),
            (Some("bob"), user_add("dave", false), "permission denied; revision 6; 1 live"),
            (None, role_add("reader"), "ok; revision 7; 1 live"),
            (None, role_add("reader"), "role name already exists; revision 7; 1 live"),
            (None, grant_permission("reader", "a", None), "permission not given; revision 7; 1 live"),
            (None, grant_permission("nobody", "a", read), "role name not found; revision 7; 1 live"),
            (None, grant_permission("reader", "b", read), "ok; revision 8; 1 live"),
            (None, grant_permission("reader", "a", read), "ok; revision 9; 1 live"),
            (None, grant_permission("reader", "a", Some(PermType::Write)), "ok; revision 10; 1 live"),
            (None, grant_role("bob", "nobody"), "role name not found; revision 10; 1 live"),
            (None, grant_role("nobody", "reader"), "user name not found; revision 10; 1 live"),
            (None, grant_role("bob", "reader"), "ok; revision 11; 1 live"),
            (None, grant_role("carol", "reader"), "ok; revision 12; 1 live"),
            (None, revoke_role("bob", "root"), "role is not granted to the user; revision 12; 1 live"),
            (None, revoke_role("nobody", "root"), "user name not found; revision 12; 1 live"),
            (None, revoke_role("root", "root"), "invalid auth management; revision 12; 1 live"),
            (None, change_password("alice"), "ok; revision 13; 1 live"),
            (None, change_password("nobody"), "user name not found; revision 13; 1 live"),
            (None, change_password("bob"), "ok; revision 14; 0 live"),
            (None, authenticate("bob", "t2"), "token t2; revision 14; 1 live"),
            (None, authenticate("carol", "t3"), "token t3; revision 14; 2 live"),
            (
                None,
                revoke_permission("reader", "x"),
                "permission is not granted to the role; revision 14; 2 live",
            ),
            (None, revoke_permission("nobody", "a"), "role name not found; revision 14; 2 live"),
            (None, revoke_permission("reader", "b"), "ok; revision 15; 2 live"),
            (None, role_delete("root"), "invalid auth management; revision 15; 2 live"),
            (None, role_delete("reader"), "ok; revision 16; 2 live"),
            (None, role_delete("reader"), "role name not found; revision 16; 2 live"),
            (None, user_delete("root"), "invalid auth management; revision 16; 2 live"),
            (None, user_delete("nobody"), "user name not found; revision 16; 2 live"),
            (None, user_delete("bob"), "ok; revision 17; 1 live"),
            (None, disable(), "ok; revision 18; 0 live"),
            (None, disable(), "ok; revision 18; 0 live"),
            (None, authenticate("carol", "t4"), "authentication is not enabled; revision 18; 0 live"),
            (None, revoke_role("root", "root"), "ok; revision 19; 0 live"),
            (None, role_delete("root"), "role name not found; revision 19; 0 live"),
            (None, user_delete("root"), "ok; revision 20; 0 live"),
        ];
        let mut issued = Vec::new();
        for (step, (who, request, want)) in cases.into_iter().enumerate() {
            let who = who.map(|name| AuthInfo { username: name.into(), revision: auth.revision() });
            let mut writer = store.writer().unwrap_or_else(|e| panic!("{e}"));
            let answer = match auth.apply(&mut writer, who.as_ref(), &request) {
                Ok(None) => "ok".to_string(),
                Ok(Some(token)) => {
                    issued.push(token.clone());
                    format!("token {token}")
                }
                Err(e) => e.to_string(),
            };
            let applied = AppliedIndex { term: 1, index: step as u64 + 1 };
            writer.commit(applied, Durability::Buffered).unwrap_or_else(|e| panic!("{e}"));
            let mut got = format!("{answer}; revision {}", auth.revision());
            if !issued.is_empty() {
                let live = issued.iter().filter(|t| auth.token_info(t).is_ok()).count();
                got.push_str(&format!("; {live} live"));
            }
            assert_eq!(got, want, "step {step}: {request:?} by {who:?}");
        }
        assert_eq!(
            shown(&auth),
            "enabled false revision 20 users [\"alice[]\", \"carol[]\"] roles []",
            "the applied state"
        );
        assert_eq!(
            shown(&AuthStore::new(&store, 4, tokens()).unwrap_or_else(|e| panic!("{e}"))),
            shown(&auth),
            "the state reloaded from the store"
        );
    }

    /// A stored auth state that cannot be read is an error, not an empty state (which would
    /// be auth switched off).
    #[test]
    fn an_unreadable_auth_state_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let tokens = || Tokens::Simple(SimpleTokens::new(Duration::from_secs(300)));
        let applied = |index| AppliedIndex { term: 1, index };
        for (index, (key, value, want)) in [
            (REVISION_KEY.to_vec(), vec![1u8, 2, 3], "corrupt data: auth revision"),
            (key(USER_PREFIX, "alice"), vec![0xff, 0xff], "corrupt data: auth user"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut writer = store.writer().unwrap_or_else(|e| panic!("{e}"));
            writer.put_cluster(&key, &value).unwrap_or_else(|e| panic!("{e}"));
            writer.commit(applied(index as u64 + 1), Durability::Buffered).unwrap_or_else(|e| panic!("{e}"));
            let err = AuthStore::new(&store, 4, tokens()).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.starts_with(want), "{err}");
            // Repaired, it loads again.
            let mut writer = store.writer().unwrap_or_else(|e| panic!("{e}"));
            writer.put_cluster(&key, &[0; 8]).unwrap_or_else(|e| panic!("{e}"));
            if key != REVISION_KEY {
                writer.put_cluster(&key, &User::default().encode_to_vec()).unwrap_or_else(|e| panic!("{e}"));
            }
            writer.commit(applied(index as u64 + 10), Durability::Buffered).unwrap_or_else(|e| panic!("{e}"));
            assert!(AuthStore::new(&store, 4, tokens()).is_ok());
        }
    }
}
