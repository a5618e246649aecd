//! rkv's state as etcd's database file: what `Maintenance.Snapshot` streams, so that
//! `etcdutl snapshot status|restore` (3.5 to 3.7) take it and an etcd member restored from it
//! serves what rkv served (the same keys, revisions, compaction mark, leases and auth, and so the
//! same HashKV).
//!
//! The file is written as etcd 3.5 lays it out (no `storageVersion`, cluster version 3.5.0):
//! every etcd from 3.5 on opens that, and 3.6 and later upgrade it as they do etcd 3.5's own.
//! Memory stays bounded: the history streams from one RocksDB snapshot into bbolt pages.

use std::fs::File;

use prost::Message;
use rkv_bbolt::Writer;
use rkv_storage::{Revision, Store, NEVER_COMPACTED};

use super::*;
use crate::auth::{ENABLED_KEY, REVISION_KEY, ROLE_PREFIX, USER_PREFIX};

/// bbolt's page size on the machines etcd runs on (it takes the OS page size).
pub const PAGE_SIZE: usize = 4096;
/// The cluster version an etcd 3.5 member records; etcd 3.6+ migrates from it.
const CLUSTER_VERSION_VALUE: &[u8] = b"3.5.0";

/// Writes a point-in-time copy of `store` into `out` and returns the file and its length.
pub fn write_snapshot(store: &Store, out: File, path: &str) -> Result<(File, u64), EtcdFileError> {
    let bbolt = |source| EtcdFileError::Bbolt { path: path.to_string(), source };
    let view = store.export()?;
    let mut w = Writer::new(out, PAGE_SIZE).map_err(bbolt)?;
    // Buckets in bbolt's order (BUCKETS is sorted), each with its keys in byte order.
    for name in BUCKETS {
        w.bucket(name).map_err(bbolt)?;
        match name {
            BUCKET_AUTH => {
                let enabled = view.cluster_get(ENABLED_KEY)?.is_some_and(|v| v == b"1");
                // etcd's auth store starts at revision 1, as rkv's does.
                let revision = view.cluster_get(REVISION_KEY)?.unwrap_or_else(|| 1u64.to_be_bytes().to_vec());
                w.put(AUTH_ENABLED, &[enabled as u8]).map_err(bbolt)?;
                w.put(AUTH_REVISION, &revision).map_err(bbolt)?;
            }
            BUCKET_AUTH_ROLES | BUCKET_AUTH_USERS => {
                let prefix = if name == BUCKET_AUTH_ROLES { ROLE_PREFIX } else { USER_PREFIX };
                view.cluster(prefix, |k, v| w.put(&k[prefix.len()..], v).map_err(bbolt))?;
            }
            BUCKET_CLUSTER => w.put(CLUSTER_VERSION, CLUSTER_VERSION_VALUE).map_err(bbolt)?,
            BUCKET_KEY => {
                view.history(|rev, tombstone, kv| w.put(&rev.encode_etcd(tombstone), kv).map_err(bbolt))?
            }
            BUCKET_LEASE => view.leases(|id, ttl| {
                let record = LeaseRecord { id, ttl, remaining_ttl: 0 }.encode_to_vec();
                w.put(&id.to_be_bytes(), &record).map_err(bbolt)
            })?,
            BUCKET_META => {
                let applied = view.applied;
                w.put(META_CONSISTENT_INDEX, &applied.index.to_be_bytes()).map_err(bbolt)?;
                if view.finished_compact_rev != NEVER_COMPACTED {
                    let rev = Revision::new(view.finished_compact_rev, 0).encode_etcd(false);
                    w.put(META_FINISHED_COMPACT, &rev).map_err(bbolt)?;
                }
                if view.compact_rev != NEVER_COMPACTED {
                    let rev = Revision::new(view.compact_rev, 0).encode_etcd(false);
                    w.put(META_SCHEDULED_COMPACT, &rev).map_err(bbolt)?;
                }
                w.put(META_TERM, &applied.term.to_be_bytes()).map_err(bbolt)?;
            }
            // Membership and alarms belong to the member that wrote them; a restore makes its
            // own (etcdutl empties these buckets too).
            _ => {}
        }
    }
    w.finish().map_err(bbolt)
}
