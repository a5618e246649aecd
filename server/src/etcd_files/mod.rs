//! etcd's own files: the bbolt database that `etcdctl snapshot save` writes and every etcd
//! member keeps in `member/snap/db`. rkv reads them to take over an etcd deployment's data
//! (`import`), writes them so that etcd's tools and etcd itself take rkv's data back
//! (`export`), and summarises them as `etcdutl snapshot status` does (`status`).
//!
//! etcd's schema (server/storage/schema in etcd): one bbolt bucket per kind of state.
//! - `key`: revision -> `mvccpb.KeyValue`, the revision as 8 bytes of main revision, `_`, 8 bytes
//!   of sub revision, big-endian, plus `t` for a tombstone (rkv's own keys drop the `_`).
//! - `meta`: `consistent_index` and `term` (the raft position, 8 bytes big-endian),
//!   `scheduledCompactRev` and `finishedCompactRev` (a revision key as above), `confState`
//!   (JSON), `storageVersion` (3.6 and later).
//! - `lease`: lease ID (8 bytes big-endian) -> `leasepb.Lease`.
//! - `auth`: `authEnabled` (one byte, 1 = on) and `authRevision` (8 bytes big-endian);
//!   `authUsers` and `authRoles`: name -> `authpb.User` / `authpb.Role`.
//! - `members`, `members_removed`, `cluster` (`clusterVersion`, `downgrade`) and `alarm`:
//!   the membership and member-local state, which a restore replaces.

pub mod export;
pub mod import;
mod mapped;
pub mod replay;
pub mod status;
pub mod takeover;

pub use crate::error::EtcdFileError;
pub use mapped::MappedFile;

pub const BUCKET_KEY: &[u8] = b"key";
pub const BUCKET_META: &[u8] = b"meta";
pub const BUCKET_LEASE: &[u8] = b"lease";
pub const BUCKET_AUTH: &[u8] = b"auth";
pub const BUCKET_AUTH_USERS: &[u8] = b"authUsers";
pub const BUCKET_AUTH_ROLES: &[u8] = b"authRoles";
pub const BUCKET_MEMBERS: &[u8] = b"members";
pub const BUCKET_MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const BUCKET_CLUSTER: &[u8] = b"cluster";
pub const BUCKET_ALARM: &[u8] = b"alarm";

/// Every bucket etcd 3.4 to 3.7 creates, in bbolt's (byte) order.
pub const BUCKETS: [&[u8]; 10] = [
    BUCKET_ALARM,
    BUCKET_AUTH,
    BUCKET_AUTH_ROLES,
    BUCKET_AUTH_USERS,
    BUCKET_CLUSTER,
    BUCKET_KEY,
    BUCKET_LEASE,
    BUCKET_MEMBERS,
    BUCKET_MEMBERS_REMOVED,
    BUCKET_META,
];

pub const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const META_TERM: &[u8] = b"term";
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const META_STORAGE_VERSION: &[u8] = b"storageVersion";
pub const AUTH_ENABLED: &[u8] = b"authEnabled";
pub const AUTH_REVISION: &[u8] = b"authRevision";
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";

/// etcd's `leasepb.Lease` (server/lease/leasepb/lease.proto in etcd): the lease bucket's values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    /// Set only for leases checkpointed with --experimental-enable-lease-checkpoint.
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}
