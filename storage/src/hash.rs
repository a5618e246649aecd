//! HashKV: a checksum of the MVCC history up to a revision (etcd's `store.HashByRev`).
//!
//! The checksum is computed over etcd's own encoding of the `key` bucket (17-byte revision keys
//! `main_sub` with a `t` for tombstones, protobuf values, tombstones holding only the key), with
//! CRC-32C as etcd does, so that members agree with each other and with etcd for the same
//! history. Revisions at or below the compacted revision count only if a compaction at the hashed
//! revision would keep them (they may still be on disk while a physical compaction runs).

use prost::Message;
use rkv_proto::mvccpb::KeyValue;
use rocksdb::IteratorMode;

use crate::error::{Result, StorageError};
use crate::revision::Revision;
use crate::store::{Store, CF_KV};

/// The result of a HashKV.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    pub hash: u32,
    /// The revision the hash covers.
    pub hash_rev: i64,
    pub current_rev: i64,
    pub compact_rev: i64,
}

/// A history value as etcd stores it: a tombstone holds its key only (rkv's also holds the
/// revision, for delete events), anything else is the same bytes.
pub(crate) fn etcd_value(rev: Revision, tombstone: bool, v: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>> {
    if !tombstone {
        return Ok(std::borrow::Cow::Borrowed(v));
    }
    let kv = KeyValue::decode(v)
        .map_err(|e| StorageError::Corrupt(format!("bad value at revision {rev}: {e}")))?;
    Ok(std::borrow::Cow::Owned(KeyValue { key: kv.key, ..Default::default() }.encode_to_vec()))
}

impl Store {
    /// Maintenance.Hash: CRC-32C over the whole keyspace the members replicate (every revision
    /// of every key and the leases), read from one RocksDB snapshot. Equal on members that
    /// applied the same log; unlike etcd's, it leaves out bookkeeping that differs per member.
    pub fn hash_all(&self) -> Result<(u32, i64)> {
        let snap = self.db.snapshot();
        // The revision of this very snapshot: it is written in the same batch as the changes.
        let rev = match snap.get_cf(self.cf(crate::store::CF_META)?, crate::store::META_CURRENT_REV)? {
            Some(v) => i64::from_be_bytes(
                v.as_slice().try_into().map_err(|_| StorageError::Corrupt("bad current revision".into()))?,
            ),
            None => crate::store::INITIAL_REVISION,
        };
        let mut crc = 0u32;
        for cf_name in [crate::store::CF_KV, crate::store::CF_LEASE] {
            crc = crc32c::crc32c_append(crc, cf_name.as_bytes());
            for item in snap.iterator_cf(self.cf(cf_name)?, IteratorMode::Start) {
                let (k, v) = item?;
                crc = crc32c::crc32c_append(crc, &k);
                crc = crc32c::crc32c_append(crc, &v);
            }
        }
        Ok((crc, rev))
    }

    /// HashKV at `rev` (0 = current). etcd refuses revisions at or below the compacted one.
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash> {
        let state = self.state_read()?;
        let (current_rev, compact_rev) = (state.current_rev, state.compact_rev);
        if rev > 0 && rev <= compact_rev {
            return Err(StorageError::Compacted);
        }
        if rev > 0 && rev > current_rev {
            return Err(StorageError::FutureRevision);
        }
        let rev = if rev == 0 { current_rev } else { rev };
        let keep = state.index.keep(rev);
        let snapshot = self.db.snapshot();
        drop(state);

        let mut crc = crc32c::crc32c(b"key");
        let kv_cf = self.cf(CF_KV)?;
        for item in snapshot.iterator_cf(kv_cf, IteratorMode::Start) {
            let (k, v) = item?;
            let (r, tombstone) = Revision::decode(&k)
                .ok_or_else(|| StorageError::Corrupt(format!("bad revision key {k:?}")))?;
            if r.main > rev {
                break;
            }
            if r.main <= compact_rev && !keep.is_empty() && !keep.contains(&r) {
                continue;
            }
            crc = crc32c::crc32c_append(crc, &r.encode_etcd(tombstone));
            crc = crc32c::crc32c_append(crc, &etcd_value(r, tombstone, &v)?);
        }
        Ok(KvHash { hash: crc, hash_rev: rev, current_rev, compact_rev })
    }
}
