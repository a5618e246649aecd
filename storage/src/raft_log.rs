//! The raft log and the raft metadata (vote, committed position, purge point) as opaque bytes.
//!
//! They live in the same RocksDB as the MVCC store, in their own column families, so that one
//! write-ahead log orders everything: a synced log append also makes durable every state
//! machine batch written before it (which is why the state machine may commit with
//! `Durability::Buffered`). Log writes are always synced: openraft's contract is that an append
//! is on disk before its callback fires and a vote before `save_vote` returns.

use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions};

use crate::error::{Result, StorageError};
use crate::store::{Store, CF_RAFT_LOG, CF_RAFT_STATE};

/// Keys of the `raft_state` column family.
pub const RAFT_VOTE: &[u8] = b"vote";
pub const RAFT_COMMITTED: &[u8] = b"committed";
pub const RAFT_PURGED: &[u8] = b"purged";

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

impl Store {
    /// Appends encoded entries (index, bytes) and fsyncs before returning.
    pub fn raft_log_append<'e>(&self, entries: impl IntoIterator<Item = (u64, &'e [u8])>) -> Result<()> {
        self.check_poisoned()?;
        let cf = self.cf(CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        for (index, bytes) in entries {
            batch.put_cf(cf, index.to_be_bytes(), bytes);
        }
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Entries with `from <= index < to`, in order.
    pub fn raft_log_range(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>> {
        let cf = self.cf(CF_RAFT_LOG)?;
        let mut out = Vec::new();
        let start = from.to_be_bytes();
        for item in self.db.iterator_cf(cf, IteratorMode::From(&start, Direction::Forward)) {
            let (k, v) = item?;
            let index = decode_index(&k)?;
            if index >= to {
                break;
            }
            out.push((index, v.to_vec()));
        }
        Ok(out)
    }

    /// The newest entry of the log, if any.
    pub fn raft_log_last(&self) -> Result<Option<(u64, Vec<u8>)>> {
        let cf = self.cf(CF_RAFT_LOG)?;
        match self.db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((decode_index(&k)?, v.to_vec())))
            }
        }
    }

    /// Deletes every entry at or after `from` (a conflicting suffix), synced.
    pub fn raft_log_truncate(&self, from: u64) -> Result<()> {
        let cf = self.cf(CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, from.to_be_bytes(), u64::MAX.to_be_bytes());
        batch.delete_cf(cf, u64::MAX.to_be_bytes());
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    /// Deletes every entry up to and including `upto` and records `purged` (the encoded id of
    /// the last purged entry) in the same write.
    pub fn raft_log_purge(&self, upto: u64, purged: &[u8]) -> Result<()> {
        let cf = self.cf(CF_RAFT_LOG)?;
        let state = self.cf(CF_RAFT_STATE)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, 0u64.to_be_bytes(), upto.saturating_add(1).to_be_bytes());
        if upto == u64::MAX {
            batch.delete_cf(cf, u64::MAX.to_be_bytes());
        }
        batch.put_cf(state, RAFT_PURGED, purged);
        self.db.write_opt(batch, &synced())?;
        Ok(())
    }

    pub fn raft_state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(CF_RAFT_STATE)?, key)?)
    }

    /// Stores a raft metadata value; `sync` makes it durable before returning (the vote).
    pub fn raft_state_put(&self, key: &[u8], value: &[u8], sync: bool) -> Result<()> {
        self.check_poisoned()?;
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.db.put_cf_opt(self.cf(CF_RAFT_STATE)?, key, value, &opts)?;
        Ok(())
    }

    /// Makes every write so far durable (the WAL is shared by all column families).
    pub fn sync_wal(&self) -> Result<()> {
        self.db.flush_wal(true)?;
        Ok(())
    }
}

fn decode_index(key: &[u8]) -> Result<u64> {
    let bytes: [u8; 8] =
        key.try_into().map_err(|_| StorageError::Corrupt(format!("raft log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_range_truncate_purge() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let store = Store::open(dir.path())?;
        let entries: Vec<(u64, Vec<u8>)> = (1..=10u64).map(|i| (i, vec![i as u8; 3])).collect();
        store.raft_log_append(entries.iter().map(|(i, b)| (*i, b.as_slice())))?;
        assert_eq!(store.raft_log_range(3, 6)?.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(store.raft_log_last()?.map(|e| e.0), Some(10));
        store.raft_log_truncate(8)?;
        assert_eq!(store.raft_log_last()?.map(|e| e.0), Some(7));
        store.raft_log_purge(4, b"p")?;
        assert_eq!(store.raft_log_range(0, 100)?.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5, 6, 7]);
        assert_eq!(store.raft_state_get(RAFT_PURGED)?, Some(b"p".to_vec()));
        drop(store);
        let store = Store::open(dir.path())?;
        assert_eq!(store.raft_log_range(0, 100)?.len(), 3);
        Ok(())
    }
}
