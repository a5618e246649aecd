//! `Store`: the MVCC key-value store on RocksDB (etcd's `kvstore.go`).
//!
//! Column families:
//! - `kv`: revision (16 bytes, +`t` for a tombstone) -> protobuf `mvccpb.KeyValue`. Every change
//!   ever made and not yet compacted; the history that reads at old revisions and watches use.
//! - `meta`: the current and compacted revisions and the applied position, written in the same
//!   `WriteBatch` as the changes they describe so that a crash never separates them.
//! - `lease`: the granted leases (ID -> TTL), changed in the same batches as the keys.
//! - `cluster`: the server layer's own state (raft applied state, member attributes, alarms,
//!   auth users, roles and revision), through `Writer::put_cluster`.
//! - `raft_log` and `raft_state`: the raft log and its metadata (raft_log.rs), in the same
//!   write-ahead log as the rest so that one synced append orders everything before it.
//!
//! Readers never block on the writer beyond a short index lock: they read at the published
//! current revision, which moves only after the writer's batch is written, and fetch values
//! through a RocksDB snapshot taken while the index lock is held, so a concurrent compaction
//! cannot delete what they are about to read.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use prost::Message;
use rkv_proto::mvccpb::KeyValue;
use rocksdb::{ColumnFamilyDescriptor, Direction, IteratorMode, Options, ReadOptions, DB};
use tracing::{info, warn};

use crate::error::{Result, StorageError};
use crate::index::{KeyRange, TreeIndex};
use crate::revision::Revision;

pub(crate) const CF_KV: &str = "kv";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_LEASE: &str = "lease";
/// State the server layer keeps with the MVCC data (raft applied state, member attributes).
pub(crate) const CF_CLUSTER: &str = "cluster";
pub(crate) const CF_RAFT_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_STATE: &str = "raft_state";

pub(crate) const META_CURRENT_REV: &[u8] = b"current_rev";
pub(crate) const META_COMPACT_REV: &[u8] = b"compact_rev";
pub(crate) const META_FINISHED_COMPACT_REV: &[u8] = b"finished_compact_rev";
pub(crate) const META_APPLIED: &[u8] = b"applied";

/// The revision of an empty store: the first change gets revision 2, as in etcd.
pub const INITIAL_REVISION: i64 = 1;
/// The compacted revision of a store that was never compacted (etcd's `compactMainRev`).
pub const NEVER_COMPACTED: i64 = -1;

/// Where the state machine is in the replicated log: (term, index) of the last applied entry.
/// Stored with every batch so that a replay after a crash starts exactly after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AppliedIndex {
    pub term: u64,
    pub index: u64,
}

impl AppliedIndex {
    pub(crate) fn encode(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.term.to_be_bytes());
        out[8..].copy_from_slice(&self.index.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        let term = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let index = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Self { term, index })
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeOptions {
    /// At most this many key-values (0 = no limit); `count` is not affected.
    pub limit: usize,
    /// Read at this revision; <= 0 means the current revision.
    pub rev: i64,
    /// Count only: no key-values are returned.
    pub count_only: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    pub kvs: Vec<KeyValue>,
    /// Number of keys in the range at the read revision, regardless of `limit`.
    pub count: usize,
    /// The store's current revision when the read was served (what etcd puts in the header).
    pub rev: i64,
}

/// The in-memory part of the store: guarded together so that a reader sees an index, a current
/// revision and a compacted revision that belong together.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) index: TreeIndex,
    /// Newest revision whose changes are durable and visible to readers.
    pub(crate) current_rev: i64,
    /// Reads below this revision fail with `Compacted`.
    pub(crate) compact_rev: i64,
}

pub struct Store {
    pub(crate) db: Arc<DB>,
    pub(crate) state: RwLock<State>,
    /// Serializes writers: the apply of a replicated log is sequential by nature.
    pub(crate) writer: Mutex<WriterState>,
    /// Serializes physical compactions so that the finished mark only moves forward.
    pub(crate) compactor: Mutex<()>,
    pub(crate) poisoned: AtomicBool,
}

/// A physical compaction that a crash interrupted.
pub(crate) struct PendingCompaction {
    rev: i64,
    finished: i64,
    keep: std::collections::HashSet<Revision>,
}

/// What `load` read from disk.
pub(crate) struct Loaded {
    pub(crate) state: State,
    pub(crate) applied: AppliedIndex,
    pub(crate) pending_compaction: Option<PendingCompaction>,
}

#[derive(Debug)]
pub(crate) struct WriterState {
    pub(crate) applied: AppliedIndex,
}

/// Bytes of memtables across all column families. 64 MiB of them left a member that had run
/// the compare benchmark's workloads above etcd's RSS; with 48 MiB (and jemalloc) it ends
/// below it (docs/benchmarks.md).
const MEMTABLE_BUDGET: usize = 48 << 20;

impl Store {
    /// Opens (or creates) the store in `path` and rebuilds the index from the history on disk.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // One memtable budget for all column families (RocksDB's default is 64 MiB per
        // memtable each, which six families and the raft log's churn turn into hundreds of
        // MiB of resident memory); the fullest family is flushed when it is reached.
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cfs = [CF_KV, CF_META, CF_LEASE, CF_CLUSTER, CF_RAFT_LOG, CF_RAFT_STATE]
            .into_iter()
            .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
        let db = DB::open_cf_descriptors(&opts, path, cfs)?;
        let store = Self {
            db: Arc::new(db),
            state: RwLock::new(State {
                index: TreeIndex::new(),
                current_rev: INITIAL_REVISION,
                compact_rev: NEVER_COMPACTED,
            }),
            writer: Mutex::new(WriterState { applied: AppliedIndex::default() }),
            compactor: Mutex::new(()),
            poisoned: AtomicBool::new(false),
        };
        store.reload()?;
        Ok(store)
    }

    pub(crate) fn cf(&self, name: &str) -> Result<&rocksdb::ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| StorageError::Corrupt(format!("column family {name} is missing")))
    }

    fn meta_i64(&self, key: &[u8]) -> Result<Option<i64>> {
        let cf = self.cf(CF_META)?;
        match self.db.get_cf(cf, key)? {
            None => Ok(None),
            Some(v) => {
                let bytes: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                    StorageError::Corrupt(format!(
                        "meta {} is {} bytes",
                        String::from_utf8_lossy(key),
                        v.len()
                    ))
                })?;
                Ok(Some(i64::from_be_bytes(bytes)))
            }
        }
    }

    /// Rebuilds the key index from the `kv` column family (etcd's `restore`), then finishes a
    /// compaction that a crash interrupted.
    pub(crate) fn reload(&self) -> Result<()> {
        let loaded = self.load()?;
        {
            let mut state = self.state_write()?;
            *state = loaded.state;
        }
        self.writer_lock()?.applied = loaded.applied;
        self.resume_compaction(loaded.pending_compaction)
    }

    pub(crate) fn resume_compaction(&self, pending: Option<PendingCompaction>) -> Result<()> {
        if let Some(p) = pending {
            warn!(compact_rev = p.rev, finished = p.finished, "resuming interrupted compaction");
            self.physical_compact(p.rev, &p.keep)?;
        }
        Ok(())
    }

    /// Reads the state the column families hold, without installing it.
    pub(crate) fn load(&self) -> Result<Loaded> {
        if self.db.get_cf(self.cf(CF_META)?, crate::bulk::META_LOAD_INCOMPLETE)?.is_some() {
            return Err(StorageError::Corrupt(
                "an import into this store was interrupted before it finished; remove the data dir and import again"
                    .into(),
            ));
        }
        let kv_cf = self.cf(CF_KV)?;
        let mut index = TreeIndex::new();
        let mut newest = INITIAL_REVISION;
        let mut entries = 0u64;
        for item in self.db.iterator_cf(kv_cf, IteratorMode::Start) {
            let (k, v) = item?;
            let (rev, tombstone) = Revision::decode(&k)
                .ok_or_else(|| StorageError::Corrupt(format!("bad revision key {k:?}")))?;
            let kv = KeyValue::decode(v.as_ref())
                .map_err(|e| StorageError::Corrupt(format!("bad value at revision {rev}: {e}")))?;
            newest = newest.max(rev.main);
            entries += 1;
            match index.key_index_mut(&kv.key) {
                Some(ki) if tombstone => {
                    ki.tombstone(rev);
                }
                Some(ki) => ki.put(rev),
                // A history that starts with a tombstone: a compaction at exactly its revision
                // kept it, for watches from there (key_index.rs).
                None if tombstone => index.restore_tombstone(&kv.key, rev),
                None => index.restore(&kv.key, Revision::new(kv.create_revision, 0), rev, kv.version),
            }
        }
        let compact_rev = self.meta_i64(META_COMPACT_REV)?.unwrap_or(NEVER_COMPACTED);
        let finished = self.meta_i64(META_FINISHED_COMPACT_REV)?.unwrap_or(NEVER_COMPACTED);
        let current_rev =
            self.meta_i64(META_CURRENT_REV)?.unwrap_or(INITIAL_REVISION).max(newest).max(compact_rev);
        let applied = match self.db.get_cf(self.cf(CF_META)?, META_APPLIED)? {
            Some(v) => AppliedIndex::decode(&v)
                .ok_or_else(|| StorageError::Corrupt("bad applied index".to_string()))?,
            None => AppliedIndex::default(),
        };
        let keep = if compact_rev >= 0 { Some(index.compact(compact_rev)) } else { None };
        let pending_compaction = match keep {
            Some(keep) if compact_rev > finished => {
                Some(PendingCompaction { rev: compact_rev, finished, keep })
            }
            _ => None,
        };
        info!(
            entries,
            keys = index.len(),
            current_rev,
            compact_rev,
            applied_index = applied.index,
            "restored mvcc store"
        );
        Ok(Loaded { state: State { index, current_rev, compact_rev }, applied, pending_compaction })
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    pub(crate) fn state_read(&self) -> Result<RwLockReadGuard<'_, State>> {
        self.check_poisoned()?;
        self.state.read().map_err(|_| StorageError::Poisoned)
    }

    pub(crate) fn state_write(&self) -> Result<RwLockWriteGuard<'_, State>> {
        self.state.write().map_err(|_| StorageError::Poisoned)
    }

    pub(crate) fn writer_lock(&self) -> Result<std::sync::MutexGuard<'_, WriterState>> {
        self.writer.lock().map_err(|_| StorageError::Poisoned)
    }

    /// The newest revision visible to readers.
    pub fn current_revision(&self) -> Result<i64> {
        Ok(self.state_read()?.current_rev)
    }

    /// Reads below this revision fail with `Compacted` (-1 when never compacted).
    pub fn compacted_revision(&self) -> Result<i64> {
        Ok(self.state_read()?.compact_rev)
    }

    /// How many keys exist at the current revision (etcd's `keys_total`): a walk of the index,
    /// for metrics scrapes, not for request paths.
    pub fn live_keys(&self) -> Result<usize> {
        let state = self.state_read()?;
        Ok(state.index.count(KeyRange::Range { start: &[], end: None }, state.current_rev))
    }

    pub fn applied_index(&self) -> Result<AppliedIndex> {
        Ok(self.writer_lock()?.applied)
    }

    /// Reads the keys of `range` as of `opts.rev` (etcd's `rangeKeys`), at the current revision.
    pub fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult> {
        self.read_view()?.range(range, opts)
    }

    /// A value of the server layer's state (see `Writer::put_cluster`).
    pub fn cluster_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_CLUSTER)?, key)?)
    }

    /// Deletes the server layer's state (synced) but keys under the `keep` prefixes: a restored
    /// snapshot starts a new cluster, with none of the raft position or members of the cluster
    /// it was taken from.
    pub fn clear_cluster_state(&self, keep: &[&[u8]]) -> Result<()> {
        let cf = self.cf(CF_CLUSTER)?;
        let mut batch = rocksdb::WriteBatch::default();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, _) = item?;
            if !keep.iter().any(|prefix| k.starts_with(prefix)) {
                batch.delete_cf(cf, k);
            }
        }
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Every value of the server layer's state whose key starts with `prefix`, in key order.
    pub fn cluster_scan(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let cf = self.cf(CF_CLUSTER)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward)) {
            let (k, v) = item?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every granted lease: (id, granted TTL in seconds), in id order.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>> {
        let cf = self.cf(CF_LEASE)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let id: [u8; 8] =
                k.as_ref().try_into().map_err(|_| StorageError::Corrupt("bad lease id".into()))?;
            let ttl: [u8; 8] =
                v.as_ref().try_into().map_err(|_| StorageError::Corrupt("bad lease ttl".into()))?;
            out.push((i64::from_be_bytes(id), i64::from_be_bytes(ttl)));
        }
        Ok(out)
    }

    /// Every live key with a lease at the current revision: (key, lease id).
    pub fn leased_keys(&self) -> Result<Vec<(Vec<u8>, i64)>> {
        let all = self.range(KeyRange::Range { start: &[], end: None }, RangeOptions::default())?;
        Ok(all.kvs.into_iter().filter(|kv| kv.lease != 0).map(|kv| (kv.key, kv.lease)).collect())
    }

    /// Rewrites the database files to reclaim the space of deleted and compacted data (what
    /// etcd's defragment does for bbolt): a full RocksDB compaction of the data column families
    /// (`kv`, `meta`, `lease`); the raft log is trimmed by snapshots, the `cluster` family is
    /// a handful of keys.
    pub fn defragment(&self) -> Result<()> {
        self.check_poisoned()?;
        for name in [CF_KV, CF_META, CF_LEASE] {
            self.db.compact_range_cf(self.cf(name)?, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Approximate bytes on disk (SST files, memtables) and bytes of live data, for Status.
    pub fn db_size(&self) -> Result<(u64, u64)> {
        let mut total = 0;
        let mut live = 0;
        for name in [CF_KV, CF_META, CF_LEASE] {
            let cf = self.cf(name)?;
            let prop = |p: &str| -> Result<u64> { Ok(self.db.property_int_value_cf(cf, p)?.unwrap_or(0)) };
            total += prop("rocksdb.total-sst-files-size")? + prop("rocksdb.size-all-mem-tables")?;
            live += prop("rocksdb.estimate-live-data-size")? + prop("rocksdb.cur-size-all-mem-tables")?;
        }
        Ok((total, live.min(total)))
    }

    /// Every stored change with main revision in `[from, to]`, in revision order (history for
    /// watch catch-up). Tombstones come back as `(rev, kv, true)` with `kv.mod_revision` set.
    pub fn changes_between(&self, from: i64, to: i64) -> Result<Vec<(Revision, KeyValue, bool)>> {
        let state = self.state_read()?;
        if from < state.compact_rev {
            return Err(StorageError::Compacted);
        }
        let snapshot = self.db.snapshot();
        drop(state);
        let kv_cf = self.cf(CF_KV)?;
        let start = Revision::encode_main_start(from.max(0));
        let mut out = Vec::new();
        for item in snapshot.iterator_cf(kv_cf, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item?;
            let (rev, tombstone) = Revision::decode(&k)
                .ok_or_else(|| StorageError::Corrupt(format!("bad revision key {k:?}")))?;
            if rev.main > to {
                break;
            }
            let kv = KeyValue::decode(v.as_ref())
                .map_err(|e| StorageError::Corrupt(format!("bad value at revision {rev}: {e}")))?;
            out.push((rev, kv, tombstone));
        }
        Ok(out)
    }
}

/// What a range needs from storage once the index has been consulted.
pub(crate) struct RangePlan {
    pub(crate) revs: Vec<Revision>,
    pub(crate) count: usize,
}

/// The index half of etcd's `rangeKeys`: validates the revision against `cur` (the current
/// revision of the reader: the published one, or a writer's own) and the compacted revision.
pub(crate) fn plan_range(
    state: &State,
    range: KeyRange<'_>,
    opts: RangeOptions,
    cur: i64,
) -> Result<RangePlan> {
    if opts.rev > cur {
        return Err(StorageError::FutureRevision);
    }
    let rev = if opts.rev <= 0 { cur } else { opts.rev };
    if rev < state.compact_rev {
        return Err(StorageError::Compacted);
    }
    if opts.count_only {
        return Ok(RangePlan { revs: Vec::new(), count: state.index.count(range, rev) });
    }
    let (revs, count) = state.index.revisions(range, rev, opts.limit);
    Ok(RangePlan { revs, count })
}

pub(crate) fn decode_values(
    revs: &[Revision],
    values: Vec<std::result::Result<Option<Vec<u8>>, rocksdb::Error>>,
) -> Result<Vec<KeyValue>> {
    revs.iter()
        .zip(values)
        .map(|(rev, value)| {
            let bytes = value?.ok_or_else(|| {
                StorageError::Corrupt(format!("revision {rev} is in the index but not on disk"))
            })?;
            KeyValue::decode(bytes.as_slice())
                .map_err(|e| StorageError::Corrupt(format!("bad value at revision {rev}: {e}")))
        })
        .collect()
}

/// A consistent read-only view for multi-step reads (a read-only txn): every range is served
/// at the revision current when the view was opened (etcd's `TxnRead`).
pub struct ReadView<'a> {
    store: &'a Store,
    rev: i64,
}

impl Store {
    pub fn read_view(&self) -> Result<ReadView<'_>> {
        let rev = self.current_revision()?;
        Ok(ReadView { store: self, rev })
    }
}

/// What etcd's apply layer needs of a read view, whether it is read-only or a write txn.
pub trait KvRead {
    /// The store revision this view reads at (etcd's `ReadView.Rev`).
    fn rev(&self) -> i64;
    /// The compacted revision (etcd's `ReadView.FirstRev`).
    fn first_rev(&self) -> Result<i64>;
    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult>;
}

impl KvRead for ReadView<'_> {
    fn rev(&self) -> i64 {
        self.rev
    }

    fn first_rev(&self) -> Result<i64> {
        self.store.compacted_revision()
    }

    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult> {
        let state = self.store.state_read()?;
        let plan = plan_range(&state, range, opts, self.rev)?;
        let snapshot = self.store.db.snapshot();
        drop(state);
        let kv_cf = self.store.cf(CF_KV)?;
        let keys: Vec<Vec<u8>> = plan.revs.iter().map(|r| r.encode(false)).collect();
        let mut read_opts = ReadOptions::default();
        read_opts.set_snapshot(&snapshot);
        let values = self.store.db.multi_get_cf_opt(keys.iter().map(|k| (kv_cf, k)), &read_opts);
        Ok(RangeResult { kvs: decode_values(&plan.revs, values)?, count: plan.count, rev: self.rev })
    }
}
