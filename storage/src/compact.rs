//! Physical compaction: deleting the revisions a compaction made unreachable.
//!
//! The logical part (reads below the compacted revision fail, the index forgets) is done by
//! `Writer::compact` inside a committed batch. This part only deletes, in bounded batches, the
//! `kv` entries at or below the compacted revision that the index no longer points at, then
//! records the compaction as finished. If a crash interrupts it, `Store::open` runs it again.

use std::collections::HashSet;

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use tracing::info;

use crate::error::{Result, StorageError};
use crate::revision::Revision;
use crate::store::{Store, CF_KV, CF_META, META_FINISHED_COMPACT_REV};
use crate::write::ScheduledCompaction;

/// Deletes per WriteBatch: bounds memory and the time other writers wait on RocksDB.
const DELETE_BATCH: usize = 10_000;

impl Store {
    /// Runs the physical part of a compaction accepted by `Writer::compact`.
    pub fn finish_compaction(&self, scheduled: &ScheduledCompaction) -> Result<()> {
        self.physical_compact(scheduled.rev, &scheduled.keep)
    }

    pub(crate) fn physical_compact(&self, rev: i64, keep: &HashSet<Revision>) -> Result<()> {
        let _serial = self.compactor.lock().map_err(|_| StorageError::Poisoned)?;
        let kv_cf = self.cf(CF_KV)?;
        let end = Revision::encode_main_start(rev + 1);
        let mut batch = WriteBatch::default();
        let mut deleted = 0u64;
        // Iterate a snapshot: new writes are above `rev` and never touched here.
        let snapshot = self.db.snapshot();
        for item in snapshot.iterator_cf(kv_cf, IteratorMode::Start) {
            let (k, _) = item?;
            if k.as_ref() >= end.as_slice() {
                break;
            }
            let (r, _) = Revision::decode(&k)
                .ok_or_else(|| StorageError::Corrupt(format!("bad revision key {k:?}")))?;
            if !keep.contains(&r) {
                batch.delete_cf(kv_cf, &k);
                deleted += 1;
                if batch.len() >= DELETE_BATCH {
                    self.db.write(std::mem::take(&mut batch))?;
                }
            }
        }
        let meta = self.cf(CF_META)?;
        batch.put_cf(meta, META_FINISHED_COMPACT_REV, rev.to_be_bytes());
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        info!(rev, deleted, kept = keep.len(), "finished physical compaction");
        Ok(())
    }
}
