//! The state machine by its parts, for conversions to and from other formats (etcd's bbolt
//! files: server/src/etcd_files/): a bulk load into a new store, and an export of one
//! consistent point in time.
//!
//! A bulk load writes in bounded batches, so the first one marks the store as being loaded and
//! only the last one, fsynced after the data itself is flushed, clears the mark together with
//! the revisions: a store whose load was interrupted (kill -9, full disk) refuses to open
//! instead of serving part of the data.

use prost::Message;
use rkv_proto::mvccpb::KeyValue;
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use tracing::info;

use crate::error::{Result, StorageError};
use crate::revision::Revision;
use crate::store::{
    AppliedIndex, Store, CF_CLUSTER, CF_KV, CF_LEASE, CF_META, INITIAL_REVISION, META_APPLIED,
    META_COMPACT_REV, META_CURRENT_REV, META_FINISHED_COMPACT_REV, NEVER_COMPACTED,
};

/// Present while a bulk load is unfinished.
pub(crate) const META_LOAD_INCOMPLETE: &[u8] = b"bulk_load_incomplete";
/// Bytes of changes per intermediate batch: enough to amortize a write, small next to memory.
const BATCH_BYTES: usize = 8 << 20;

/// What the history of a loaded store ended at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSummary {
    pub current_rev: i64,
    pub compact_rev: i64,
    /// Entries of the history (every revision of every key, tombstones included).
    pub history: u64,
    pub leases: u64,
}

/// Fills a new, empty store. Nothing is visible until `finish`.
pub struct BulkLoad<'s> {
    store: &'s Store,
    batch: WriteBatch,
    newest: i64,
    last: Option<(Revision, bool)>,
    history: u64,
    leases: u64,
}

impl Store {
    /// Starts filling this store, which must hold no history, leases or metadata yet.
    pub fn bulk_load(&self) -> Result<BulkLoad<'_>> {
        for name in [CF_KV, CF_LEASE, CF_META] {
            if self.db.iterator_cf(self.cf(name)?, IteratorMode::Start).next().is_some() {
                return Err(StorageError::Corrupt(format!("bulk load into a store that has {name} data")));
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META)?, META_LOAD_INCOMPLETE, b"1");
        // Durable before any data: whatever of the data reaches disk, the mark is there.
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(BulkLoad {
            store: self,
            batch: WriteBatch::default(),
            newest: INITIAL_REVISION,
            last: None,
            history: 0,
            leases: 0,
        })
    }
}

impl BulkLoad<'_> {
    /// One entry of the history, in revision order; `kv` is an encoded `mvccpb.KeyValue` (of a
    /// tombstone only its key is kept).
    pub fn history(&mut self, rev: Revision, tombstone: bool, kv: &[u8]) -> Result<()> {
        if rev.main < 0 || rev.sub < 0 {
            return Err(StorageError::Corrupt(format!("negative revision {rev}")));
        }
        if self.last.is_some_and(|last| last >= (rev, tombstone)) {
            return Err(StorageError::Corrupt(format!("revision {rev} out of order")));
        }
        let decoded = KeyValue::decode(kv)
            .map_err(|e| StorageError::Corrupt(format!("bad value at revision {rev}: {e}")))?;
        self.last = Some((rev, tombstone));
        self.newest = self.newest.max(rev.main);
        self.history += 1;
        let cf = self.store.cf(CF_KV)?;
        if tombstone {
            // A tombstone here holds its key and its revision (what a delete event reports);
            // other formats (etcd's) may keep the key only.
            let kv = KeyValue { key: decoded.key, mod_revision: rev.main, ..Default::default() };
            self.batch.put_cf(cf, rev.encode(true), kv.encode_to_vec());
        } else {
            self.batch.put_cf(cf, rev.encode(false), kv);
        }
        self.flush_if_full()
    }

    /// A granted lease and its TTL in seconds.
    pub fn lease(&mut self, id: i64, ttl: i64) -> Result<()> {
        self.leases += 1;
        self.batch.put_cf(self.store.cf(CF_LEASE)?, id.to_be_bytes(), ttl.to_be_bytes());
        self.flush_if_full()
    }

    /// Server-layer state (auth users and roles, ...).
    pub fn cluster(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.batch.put_cf(self.store.cf(CF_CLUSTER)?, key, value);
        self.flush_if_full()
    }

    fn flush_if_full(&mut self) -> Result<()> {
        if self.batch.size_in_bytes() >= BATCH_BYTES {
            self.write_unlogged()?;
        }
        Ok(())
    }

    /// Writes the batch without RocksDB's WAL: the data goes to disk once, when memtables are
    /// flushed, instead of twice. A crash before `finish` loses it, and the store, still
    /// marked as being loaded, refuses to open, so nothing half-loaded is ever served.
    fn write_unlogged(&mut self) -> Result<()> {
        let mut opts = WriteOptions::default();
        opts.disable_wal(true);
        self.store.db.write_opt(std::mem::take(&mut self.batch), &opts)?;
        Ok(())
    }

    /// Makes the load durable and visible. `compacted` is the compaction that finished before
    /// the data was taken and `scheduled` one that was accepted but may not have run: the store
    /// runs it now, as a restarted member would. The current revision is the newest of the
    /// history and of the compactions, as etcd derives it.
    pub fn finish(mut self, compacted: Option<i64>, scheduled: Option<i64>) -> Result<LoadSummary> {
        let finished = compacted.unwrap_or(NEVER_COMPACTED);
        let compact_rev = scheduled.map_or(finished, |s| s.max(finished));
        let current_rev = self.newest.max(compact_rev);
        let meta = self.store.cf(CF_META)?;
        // What was written without the WAL reaches disk (flushed, fsynced SST files) before
        // the mark goes, in a logged and synced batch.
        self.write_unlogged()?;
        let cfs = [CF_KV, CF_LEASE, CF_CLUSTER, CF_META].map(|name| self.store.cf(name));
        let cfs = cfs.into_iter().collect::<Result<Vec<_>>>()?;
        let mut flush = rocksdb::FlushOptions::default();
        flush.set_wait(true);
        self.store.db.flush_cfs_opt(&cfs, &flush)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_CURRENT_REV, current_rev.to_be_bytes());
        if compact_rev != NEVER_COMPACTED {
            batch.put_cf(meta, META_COMPACT_REV, compact_rev.to_be_bytes());
            batch.put_cf(meta, META_FINISHED_COMPACT_REV, finished.to_be_bytes());
        }
        batch.delete_cf(meta, META_LOAD_INCOMPLETE);
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.store.db.write_opt(batch, &opts)?;
        self.store.reload()?;
        let loaded = LoadSummary {
            current_rev: self.store.current_revision()?,
            compact_rev: self.store.compacted_revision()?,
            history: self.history,
            leases: self.leases,
        };
        info!(?loaded, "bulk load finished");
        Ok(loaded)
    }
}

/// One consistent point in time of the state machine, read part by part.
pub struct Export<'s> {
    store: &'s Store,
    snap: rocksdb::SnapshotWithThreadMode<'s, rocksdb::DB>,
    /// `NEVER_COMPACTED` (-1) if the store was never compacted.
    pub compact_rev: i64,
    /// The compaction whose physical part had finished at this point.
    pub finished_compact_rev: i64,
    /// The position in the replicated log this point corresponds to.
    pub applied: AppliedIndex,
}

impl Store {
    /// Pins the current state for an export; writes go on meanwhile.
    pub fn export(&self) -> Result<Export<'_>> {
        // Taken under the index lock so that the revisions read below belong to this snapshot.
        let state = self.state_read()?;
        let snap = self.db.snapshot();
        drop(state);
        let meta = |key: &[u8]| -> Result<Option<i64>> {
            match snap.get_cf(self.cf(CF_META)?, key)? {
                None => Ok(None),
                Some(v) => Ok(Some(i64::from_be_bytes(
                    v.as_slice().try_into().map_err(|_| StorageError::Corrupt("bad meta value".into()))?,
                ))),
            }
        };
        let compact_rev = meta(META_COMPACT_REV)?.unwrap_or(NEVER_COMPACTED);
        let finished_compact_rev = meta(META_FINISHED_COMPACT_REV)?.unwrap_or(NEVER_COMPACTED);
        let applied = match snap.get_cf(self.cf(CF_META)?, META_APPLIED)? {
            Some(v) => {
                AppliedIndex::decode(&v).ok_or_else(|| StorageError::Corrupt("bad applied index".into()))?
            }
            None => AppliedIndex::default(),
        };
        Ok(Export { store: self, snap, compact_rev, finished_compact_rev, applied })
    }
}

impl Export<'_> {
    /// Every entry of the history in revision order: (revision, tombstone, encoded KeyValue),
    /// the value as etcd stores it (a tombstone holds its key only; HashKV covers these bytes).
    /// The callback's error type is the caller's, so that its own failures pass through.
    pub fn history<E: From<StorageError>>(
        &self,
        mut each: impl FnMut(Revision, bool, &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        for item in self.snap.iterator_cf(self.store.cf(CF_KV)?, IteratorMode::Start) {
            let (k, v) = item.map_err(StorageError::from)?;
            let (rev, tombstone) = Revision::decode(&k)
                .ok_or_else(|| StorageError::Corrupt(format!("bad revision key {k:?}")))?;
            each(rev, tombstone, &crate::hash::etcd_value(rev, tombstone, &v)?)?;
        }
        Ok(())
    }

    /// Every lease: (id, TTL in seconds), in id order as stored (big-endian, so negative ids
    /// last).
    pub fn leases<E: From<StorageError>>(
        &self,
        mut each: impl FnMut(i64, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        for item in self.snap.iterator_cf(self.store.cf(CF_LEASE)?, IteratorMode::Start) {
            let (k, v) = item.map_err(StorageError::from)?;
            let id: [u8; 8] =
                k.as_ref().try_into().map_err(|_| StorageError::Corrupt("bad lease id".into()))?;
            let ttl: [u8; 8] =
                v.as_ref().try_into().map_err(|_| StorageError::Corrupt("bad lease ttl".into()))?;
            each(i64::from_be_bytes(id), i64::from_be_bytes(ttl))?;
        }
        Ok(())
    }

    /// One server-layer entry.
    pub fn cluster_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.snap.get_cf(self.store.cf(CF_CLUSTER)?, key)?)
    }

    /// The server-layer entries under `prefix`, in key order.
    pub fn cluster<E: From<StorageError>>(
        &self,
        prefix: &[u8],
        mut each: impl FnMut(&[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let cf = self.store.cf(CF_CLUSTER)?;
        let mode = IteratorMode::From(prefix, rocksdb::Direction::Forward);
        for item in self.snap.iterator_cf(cf, mode) {
            let (k, v) = item.map_err(StorageError::from)?;
            if !k.starts_with(prefix) {
                break;
            }
            each(&k, &v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{KeyRange, RangeOptions};

    fn kv(key: &[u8], rev: i64) -> Vec<u8> {
        KeyValue {
            key: key.to_vec(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn an_unfinished_load_refuses_to_open_and_a_finished_one_serves() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Io { path: "tmp".into(), source: e })?;
        {
            let store = Store::open(dir.path())?;
            let mut load = store.bulk_load()?;
            load.history(Revision::new(2, 0), false, &kv(b"a", 2))?;
        }
        let refused = Store::open(dir.path()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("interrupted"), "{refused}");

        let fresh = tempfile::tempdir().map_err(|e| StorageError::Io { path: "tmp".into(), source: e })?;
        let store = Store::open(fresh.path())?;
        let mut load = store.bulk_load()?;
        load.history(Revision::new(2, 0), false, &kv(b"a", 2))?;
        // Out of order and negative revisions are refused.
        assert!(load.history(Revision::new(2, 0), false, &kv(b"a", 2)).is_err());
        assert!(load.history(Revision::new(-3, 0), false, &kv(b"a", 2)).is_err());
        // An etcd tombstone holds the key only; rkv keeps its revision with it.
        load.history(
            Revision::new(3, 0),
            true,
            &KeyValue { key: b"a".to_vec(), ..Default::default() }.encode_to_vec(),
        )?;
        load.history(Revision::new(5, 0), false, &kv(b"b", 5))?;
        load.lease(7, 60)?;
        let summary = load.finish(None, Some(4))?;
        assert_eq!(summary, LoadSummary { current_rev: 5, compact_rev: 4, history: 3, leases: 1 });
        drop(store);
        let store = Store::open(fresh.path())?;
        assert_eq!(store.current_revision()?, 5);
        assert_eq!(store.compacted_revision()?, 4);
        assert!(matches!(
            store.range(KeyRange::Single(b"a"), RangeOptions { rev: 3, ..Default::default() }),
            Err(StorageError::Compacted)
        ));
        let b = store.range(KeyRange::Single(b"b"), RangeOptions::default())?;
        assert_eq!(b.kvs.len(), 1);
        assert_eq!(store.leases()?, vec![(7, 60)]);
        // A load goes only into an empty store.
        assert!(store.bulk_load().is_err());
        Ok(())
    }
}
