//! etcd's raft log entries as rkv commands: what a stopped etcd member had committed to its WAL
//! but not yet written into its bbolt db (everything after the db's consistent index) is
//! applied to the imported store through rkv's own apply layer, as etcd would have applied it
//! on its next start.

use rkv_proto::etcdserverpb::{
    AlarmRequest, AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest, CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest, TxnRequest,
};
use rkv_proto::rkvpb::{auth_command::Request as AuthRequest, AuthInfo};

use crate::apply::{Command, Proposed};

/// etcd's `RequestHeader` of a logged request: who proposed it, at which auth revision.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RequestHeader {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(string, tag = "2")]
    pub username: String,
    #[prost(uint64, tag = "3")]
    pub auth_revision: u64,
}

/// etcd's `InternalRaftRequest` (api/etcdserverpb/raft_internal.proto in etcd): the data of a
/// normal raft entry. Only the requests that change what rkv stores are declared; the others
/// (reads, tokens, lease checkpoints, cluster version and member attributes, which the new
/// member makes for itself) decode as an entry with none of these set.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InternalRaftRequest {
    #[prost(message, optional, tag = "100")]
    pub header: Option<RequestHeader>,
    #[prost(message, optional, tag = "4")]
    pub put: Option<PutRequest>,
    #[prost(message, optional, tag = "5")]
    pub delete_range: Option<DeleteRangeRequest>,
    #[prost(message, optional, tag = "6")]
    pub txn: Option<TxnRequest>,
    #[prost(message, optional, tag = "7")]
    pub compaction: Option<CompactionRequest>,
    #[prost(message, optional, tag = "8")]
    pub lease_grant: Option<LeaseGrantRequest>,
    #[prost(message, optional, tag = "9")]
    pub lease_revoke: Option<LeaseRevokeRequest>,
    #[prost(message, optional, tag = "10")]
    pub alarm: Option<AlarmRequest>,
    #[prost(message, optional, tag = "1000")]
    pub auth_enable: Option<AuthEnableRequest>,
    #[prost(message, optional, tag = "1011")]
    pub auth_disable: Option<AuthDisableRequest>,
    #[prost(message, optional, tag = "1100")]
    pub auth_user_add: Option<AuthUserAddRequest>,
    #[prost(message, optional, tag = "1101")]
    pub auth_user_delete: Option<AuthUserDeleteRequest>,
    #[prost(message, optional, tag = "1103")]
    pub auth_user_change_password: Option<AuthUserChangePasswordRequest>,
    #[prost(message, optional, tag = "1104")]
    pub auth_user_grant_role: Option<AuthUserGrantRoleRequest>,
    #[prost(message, optional, tag = "1105")]
    pub auth_user_revoke_role: Option<AuthUserRevokeRoleRequest>,
    #[prost(message, optional, tag = "1200")]
    pub auth_role_add: Option<AuthRoleAddRequest>,
    #[prost(message, optional, tag = "1201")]
    pub auth_role_delete: Option<AuthRoleDeleteRequest>,
    #[prost(message, optional, tag = "1203")]
    pub auth_role_grant_permission: Option<AuthRoleGrantPermissionRequest>,
    #[prost(message, optional, tag = "1204")]
    pub auth_role_revoke_permission: Option<AuthRoleRevokePermissionRequest>,
}

/// Why a logged request cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("entry {index}: not an etcd request: {source}")]
    Decode {
        index: u64,
        #[source]
        source: prost::DecodeError,
    },
    #[error("entry {index}: hashing the password of user {user:?}: {detail}")]
    Password { index: u64, user: String, detail: String },
}

/// The rkv command of one logged etcd request, or None if it changes nothing rkv keeps.
/// `bcrypt_cost` hashes the plain password that etcd 3.4 logged for a new user (3.5 and later
/// log the hash).
pub fn command(index: u64, data: &[u8], bcrypt_cost: u32) -> Result<Option<Proposed>, ReplayError> {
    use prost::Message;
    if data.is_empty() {
        // The empty entry a new leader appends.
        return Ok(None);
    }
    let mut r = InternalRaftRequest::decode(data).map_err(|source| ReplayError::Decode { index, source })?;
    let by = r
        .header
        .as_ref()
        .filter(|h| !h.username.is_empty())
        .map(|h| AuthInfo { username: h.username.clone(), revision: h.auth_revision });
    let command = if let Some(p) = r.put.take() {
        Command::Put(p)
    } else if let Some(d) = r.delete_range.take() {
        Command::DeleteRange(d)
    } else if let Some(t) = r.txn.take() {
        Command::Txn(t)
    } else if let Some(c) = r.compaction.take() {
        Command::Compact(c)
    } else if let Some(g) = r.lease_grant.take() {
        Command::LeaseGrant(g)
    } else if let Some(v) = r.lease_revoke.take() {
        Command::LeaseRevoke(v)
    } else if let Some(a) = r.alarm.take() {
        Command::Alarm(a)
    } else if let Some(auth) = auth_request(index, &mut r, bcrypt_cost)? {
        Command::Auth(auth)
    } else {
        return Ok(None);
    };
    Ok(Some(Proposed { command, by }))
}

fn auth_request(
    index: u64,
    r: &mut InternalRaftRequest,
    bcrypt_cost: u32,
) -> Result<Option<AuthRequest>, ReplayError> {
    Ok(Some(if let Some(x) = r.auth_enable.take() {
        AuthRequest::Enable(x)
    } else if let Some(x) = r.auth_disable.take() {
        AuthRequest::Disable(x)
    } else if let Some(mut x) = r.auth_user_add.take() {
        if !x.options.as_ref().is_some_and(|o| o.no_password) {
            hash_plain_password(index, &x.name, &mut x.password, &mut x.hashed_password, bcrypt_cost)?;
        }
        x.password.clear();
        AuthRequest::UserAdd(x)
    } else if let Some(x) = r.auth_user_delete.take() {
        AuthRequest::UserDelete(x)
    } else if let Some(mut x) = r.auth_user_change_password.take() {
        hash_plain_password(index, &x.name, &mut x.password, &mut x.hashed_password, bcrypt_cost)?;
        AuthRequest::UserChangePassword(x)
    } else if let Some(x) = r.auth_user_grant_role.take() {
        AuthRequest::UserGrantRole(x)
    } else if let Some(x) = r.auth_user_revoke_role.take() {
        AuthRequest::UserRevokeRole(x)
    } else if let Some(x) = r.auth_role_add.take() {
        AuthRequest::RoleAdd(x)
    } else if let Some(x) = r.auth_role_delete.take() {
        AuthRequest::RoleDelete(x)
    } else if let Some(x) = r.auth_role_grant_permission.take() {
        AuthRequest::RoleGrantPermission(x)
    } else if let Some(x) = r.auth_role_revoke_permission.take() {
        AuthRequest::RoleRevokePermission(x)
    } else {
        return Ok(None);
    }))
}

/// etcd 3.4 logged a new password in plain text and hashed it when applying; 3.5 and later log
/// the bcrypt hash. rkv applies hashes only: hash a plain one here, and never keep it.
fn hash_plain_password(
    index: u64,
    user: &str,
    password: &mut String,
    hashed: &mut String,
    bcrypt_cost: u32,
) -> Result<(), ReplayError> {
    if hashed.is_empty() && !password.is_empty() {
        *hashed = bcrypt::hash(password.as_str(), bcrypt_cost).map_err(|e| ReplayError::Password {
            index,
            user: user.to_string(),
            detail: e.to_string(),
        })?;
    }
    password.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn entry(r: InternalRaftRequest) -> Vec<u8> {
        r.encode_to_vec()
    }

    #[test]
    fn logged_requests_map_to_commands_with_their_proposer() {
        let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
        let header = RequestHeader { id: 9, username: "alice".into(), auth_revision: 4 };
        let data =
            entry(InternalRaftRequest { header: Some(header), put: Some(put.clone()), ..Default::default() });
        let proposed = command(7, &data, 4).ok().flatten().unwrap_or_else(|| panic!("no command"));
        assert!(matches!(&proposed.command, Command::Put(p) if *p == put));
        assert_eq!(proposed.by, Some(AuthInfo { username: "alice".into(), revision: 4 }));

        // A leader's empty entry and requests rkv keeps nothing of (a range) are skipped.
        assert!(command(8, &[], 4).ok().flatten().is_none());
        let range = rkv_proto::etcdserverpb::RangeRequest { key: b"k".to_vec(), ..Default::default() };
        let mut raw = InternalRaftRequest::default().encode_to_vec();
        prost::encoding::message::encode(3, &range, &mut raw);
        assert!(command(9, &raw, 4).ok().flatten().is_none());
        // Bytes that are not a request are an error naming the entry.
        let err = command(10, &[0xff, 0xff, 0xff], 4).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.starts_with("entry 10:"), "{err}");
    }

    #[test]
    fn a_plain_password_logged_by_etcd_3_4_is_hashed_and_dropped() {
        let add = AuthUserAddRequest { name: "bob".into(), password: "secret".into(), ..Default::default() };
        let data = entry(InternalRaftRequest { auth_user_add: Some(add), ..Default::default() });
        let proposed = command(3, &data, 4).ok().flatten().unwrap_or_else(|| panic!("no command"));
        let Command::Auth(AuthRequest::UserAdd(x)) = proposed.command else { panic!("not a user add") };
        assert!(x.password.is_empty());
        assert!(bcrypt::verify("secret", &x.hashed_password).unwrap_or(false));
        assert_eq!(proposed.by, None);
    }
}
