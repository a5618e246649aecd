//! `Writer` and `TxnWrite`: the only way to change the store (etcd's `kvstore_txn.go` write half).
//!
//! A `Writer` holds the store's writer lock and one RocksDB `WriteBatch`. Any number of write
//! transactions (one per etcd request) can go into it, each getting the next main revision when
//! it changes something; `commit` writes the batch, with the applied position and the new
//! current revision, in one atomic write, and only then makes the new revisions visible to
//! readers. That is the seam for group commit: many requests, one write (synced, or ordered
//! behind the synced raft log append of the entries they come from), no ack before it.
//!
//! Inside a transaction reads see the transaction's own earlier writes (etcd semantics: a range
//! after a put in the same txn sees the put).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::MutexGuard;

use prost::Message;
use rkv_proto::mvccpb::{event::EventType, Event, KeyValue};
use rocksdb::{WriteBatch, WriteOptions};
use tracing::error;

use crate::error::{Result, StorageError};
use crate::index::KeyRange;
use crate::revision::Revision;
use crate::store::{
    decode_values, plan_range, AppliedIndex, KvRead, RangeOptions, RangeResult, Store, WriterState,
    CF_CLUSTER, CF_KV, CF_LEASE, CF_META, META_APPLIED, META_COMPACT_REV, META_CURRENT_REV,
};

/// Whether `commit` waits for the batch to reach stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// fsync the RocksDB WAL before returning: the store itself is the durable record.
    Sync,
    /// Leave the WAL in the OS page cache: only when a durable log can replay the batch.
    Buffered,
}

/// What a committed batch changed: the new current revision and the events of every revision
/// in it, in order (for the watch hub).
#[derive(Debug, Default)]
pub struct Committed {
    pub current_rev: i64,
    pub events: Vec<Event>,
}

/// A compaction accepted into a batch; its physical part runs after the batch is durable.
#[derive(Debug)]
pub struct ScheduledCompaction {
    pub rev: i64,
    pub(crate) keep: std::collections::HashSet<Revision>,
}

pub struct Writer<'a> {
    store: &'a Store,
    guard: MutexGuard<'a, WriterState>,
    batch: WriteBatch,
    /// Values written in this batch and not yet in RocksDB, for reads of own writes.
    pending: HashMap<Revision, KeyValue>,
    /// Newest revision assigned in this batch (the published one until something changes).
    rev: i64,
    events: Vec<Event>,
    compact_rev: Option<i64>,
    committed: bool,
    /// Changes other than key events (leases) are in the batch.
    dirty: bool,
    /// Whether events carry the key's previous value (someone watches with prev_kv).
    capture_prev: bool,
}

impl Drop for Writer<'_> {
    /// A writer dropped with uncommitted changes leaves the index ahead of the disk: the store
    /// refuses to serve from then on rather than answer from a state that was never durable.
    fn drop(&mut self) {
        let dirty = self.dirty || !self.events.is_empty() || self.compact_rev.is_some();
        if dirty && !self.committed {
            self.store.poisoned.store(true, Ordering::Release);
            error!("write batch dropped without commit; the store stops serving");
        }
    }
}

impl Store {
    /// Takes the writer lock. Only one `Writer` exists at a time.
    pub fn writer(&self) -> Result<Writer<'_>> {
        self.check_poisoned()?;
        let guard = self.writer_lock()?;
        let rev = self.state_read()?.current_rev;
        Ok(Writer {
            store: self,
            guard,
            batch: WriteBatch::default(),
            pending: HashMap::new(),
            rev,
            events: Vec::new(),
            compact_rev: None,
            committed: false,
            dirty: false,
            capture_prev: false,
        })
    }
}

impl<'a> Writer<'a> {
    /// The newest revision, including this batch's uncommitted transactions.
    pub fn rev(&self) -> i64 {
        self.rev
    }

    pub fn compacted_revision(&self) -> Result<i64> {
        self.store.compacted_revision()
    }

    /// Records server-layer state (raft applied state, member attributes) in this batch, so it
    /// is committed atomically with the changes it belongs to.
    pub fn put_cluster(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let cf = self.store.cf(CF_CLUSTER)?;
        self.batch.put_cf(cf, key, value);
        self.dirty = true;
        Ok(())
    }

    /// Deletes a value of the server layer's state in this batch.
    pub fn delete_cluster(&mut self, key: &[u8]) -> Result<()> {
        let cf = self.store.cf(CF_CLUSTER)?;
        self.batch.delete_cf(cf, key);
        self.dirty = true;
        Ok(())
    }

    /// Records a granted lease in this batch.
    pub fn put_lease(&mut self, id: i64, ttl: i64) -> Result<()> {
        let cf = self.store.cf(CF_LEASE)?;
        self.batch.put_cf(cf, id.to_be_bytes(), ttl.to_be_bytes());
        self.dirty = true;
        Ok(())
    }

    /// Removes a lease in this batch.
    pub fn delete_lease(&mut self, id: i64) -> Result<()> {
        let cf = self.store.cf(CF_LEASE)?;
        self.batch.delete_cf(cf, id.to_be_bytes());
        self.dirty = true;
        Ok(())
    }

    /// Events of this batch so far (for callers that track changes per request).
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Makes the events of this batch carry each key's previous value (`Event.prev_kv`).
    pub fn capture_prev_kv(&mut self, on: bool) {
        self.capture_prev = on;
    }

    /// Starts a write transaction at the current revision of this batch.
    pub fn txn(&mut self) -> TxnWrite<'_, 'a> {
        let begin_rev = self.rev;
        TxnWrite { w: self, begin_rev, changes: 0 }
    }

    /// Accepts a compaction at `rev` (etcd's `updateCompactRev` + index compaction). Reads below
    /// `rev` fail from now on; the revisions it frees are deleted by `Store::physical_compact`
    /// after `commit`.
    pub fn compact(&mut self, rev: i64) -> Result<ScheduledCompaction> {
        let mut state = self.store.state_write()?;
        if rev <= state.compact_rev {
            return Err(StorageError::Compacted);
        }
        if rev > self.rev {
            return Err(StorageError::FutureRevision);
        }
        state.compact_rev = rev;
        let keep = state.index.compact(rev);
        drop(state);
        let meta = self.store.cf(CF_META)?;
        self.batch.put_cf(meta, META_COMPACT_REV, rev.to_be_bytes());
        self.compact_rev = Some(rev);
        Ok(ScheduledCompaction { rev, keep })
    }

    /// Writes the batch atomically with the applied position and publishes its revisions.
    /// On a write error the store is poisoned: its index is ahead of its disk.
    pub fn commit(mut self, applied: AppliedIndex, durability: Durability) -> Result<Committed> {
        let meta = self.store.cf(CF_META)?;
        self.batch.put_cf(meta, META_APPLIED, applied.encode());
        self.batch.put_cf(meta, META_CURRENT_REV, self.rev.to_be_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(durability == Durability::Sync);
        let batch = std::mem::take(&mut self.batch);
        if let Err(e) = self.store.db.write_opt(batch, &opts) {
            self.store.poisoned.store(true, Ordering::Release);
            error!(error = %e, "write batch failed; the store stops serving");
            return Err(e.into());
        }
        self.committed = true;
        self.guard.applied = applied;
        let mut state = self.store.state_write()?;
        state.current_rev = self.rev;
        drop(state);
        Ok(Committed { current_rev: self.rev, events: std::mem::take(&mut self.events) })
    }

    fn range_at(&self, range: KeyRange<'_>, opts: RangeOptions, cur: i64) -> Result<RangeResult> {
        let state = self.store.state_read()?;
        let plan = plan_range(&state, range, opts, cur)?;
        drop(state);
        // Own writes first; everything else is committed and cannot be compacted away while
        // the writer lock is held (compaction goes through the writer).
        let mut kvs = Vec::with_capacity(plan.revs.len());
        let mut missing = Vec::new();
        for (i, rev) in plan.revs.iter().enumerate() {
            match self.pending.get(rev) {
                Some(kv) => kvs.push(Some(kv.clone())),
                None => {
                    kvs.push(None);
                    missing.push((i, *rev));
                }
            }
        }
        if !missing.is_empty() {
            let kv_cf = self.store.cf(CF_KV)?;
            let keys: Vec<Vec<u8>> = missing.iter().map(|(_, r)| r.encode(false)).collect();
            let values = self.store.db.multi_get_cf(keys.iter().map(|k| (kv_cf, k)));
            let revs: Vec<Revision> = missing.iter().map(|(_, r)| *r).collect();
            for ((i, _), kv) in missing.iter().zip(decode_values(&revs, values)?) {
                kvs[*i] = Some(kv);
            }
        }
        Ok(RangeResult { kvs: kvs.into_iter().flatten().collect(), count: plan.count, rev: cur })
    }

    /// The stored value at `rev` (a live revision), from this batch or from disk.
    fn value_at(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(kv) = self.pending.get(&rev) {
            return Ok(kv.clone());
        }
        let kv_cf = self.store.cf(CF_KV)?;
        let value = self.store.db.get_cf(kv_cf, rev.encode(false));
        decode_values(&[rev], vec![value])?
            .pop()
            .ok_or_else(|| StorageError::Corrupt(format!("no value at revision {rev}")))
    }

    fn write_change(
        &mut self,
        rev: Revision,
        kv: KeyValue,
        tombstone: bool,
        prev: Option<Revision>,
    ) -> Result<()> {
        let prev_kv = match prev {
            Some(p) if self.capture_prev => Some(self.value_at(p)?),
            _ => None,
        };
        let kv_cf = self.store.cf(CF_KV)?;
        self.batch.put_cf(kv_cf, rev.encode(tombstone), kv.encode_to_vec());
        let kind = if tombstone { EventType::Delete } else { EventType::Put };
        self.events.push(Event { r#type: kind as i32, kv: Some(kv.clone()), prev_kv });
        self.pending.insert(rev, kv);
        Ok(())
    }
}

/// One etcd write request inside a `Writer` batch (etcd's `storeTxnWrite`).
pub struct TxnWrite<'w, 'a> {
    w: &'w mut Writer<'a>,
    begin_rev: i64,
    /// Number of changes so far: the sub revision of the next one.
    changes: i64,
}

impl TxnWrite<'_, '_> {
    /// The revision this transaction started at.
    pub fn begin_rev(&self) -> i64 {
        self.begin_rev
    }

    /// The revision reads inside this transaction see: its own changes are at `begin_rev + 1`.
    fn read_rev(&self) -> i64 {
        if self.changes > 0 {
            self.begin_rev + 1
        } else {
            self.begin_rev
        }
    }

    pub fn has_changes(&self) -> bool {
        self.changes > 0
    }

    /// Puts `key`; returns the revision of the change (etcd: `beginRev + 1`).
    pub fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) -> Result<i64> {
        let main = self.begin_rev + 1;
        let rev = Revision::new(main, self.changes);
        let (create_revision, version, prior) = {
            let mut state = self.w.store.state_write()?;
            let prior = state.index.get(key, main);
            state.index.put(key, rev);
            match prior {
                Some(k) => (k.created.main, k.version + 1, Some(k.modified)),
                None => (main, 1, None),
            }
        };
        let kv = KeyValue { key: key.to_vec(), create_revision, mod_revision: main, version, value, lease };
        self.w.write_change(rev, kv, false, prior)?;
        self.changes += 1;
        self.w.rev = main;
        Ok(main)
    }

    /// Deletes every live key of `range`; returns how many were deleted and the revision of the
    /// response header (etcd: `beginRev + 1` once this transaction changed something).
    pub fn delete_range(&mut self, range: KeyRange<'_>) -> Result<(i64, i64)> {
        let read_rev = self.read_rev();
        let main = self.begin_rev + 1;
        let mut keys = Vec::new();
        {
            let state = self.w.store.state_read()?;
            state.index.visit(range, read_rev, |key, k| {
                keys.push((key.to_vec(), k.modified));
                true
            });
        }
        for (key, prior) in &keys {
            let rev = Revision::new(main, self.changes);
            let deleted = self.w.store.state_write()?.index.tombstone(key, rev);
            if !deleted {
                return Err(StorageError::Corrupt(format!(
                    "key {} listed as live but has no live generation",
                    String::from_utf8_lossy(key)
                )));
            }
            let kv = KeyValue { key: key.clone(), mod_revision: main, ..Default::default() };
            self.w.write_change(rev, kv, true, Some(*prior))?;
            self.changes += 1;
            self.w.rev = main;
        }
        let n = keys.len() as i64;
        if n != 0 || self.changes > 0 {
            Ok((n, main))
        } else {
            Ok((0, self.begin_rev))
        }
    }

    /// Ends the transaction; returns its revision (bumped only if it changed something).
    pub fn end(self) -> i64 {
        self.read_rev()
    }
}

impl KvRead for TxnWrite<'_, '_> {
    /// etcd's `storeTxnWrite.Rev`: the revision the transaction started at.
    fn rev(&self) -> i64 {
        self.begin_rev
    }

    fn first_rev(&self) -> Result<i64> {
        self.w.store.compacted_revision()
    }

    /// Reads see this transaction's own earlier changes.
    fn range(&self, range: KeyRange<'_>, opts: RangeOptions) -> Result<RangeResult> {
        self.w.range_at(range, opts, self.read_rev())
    }
}
