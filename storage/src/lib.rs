//! rkv's storage layer: etcd's MVCC model on RocksDB.
//!
//! Owns everything RocksDB knows: the revisioned history (`kv` column family), the in-memory
//! key index rebuilt from it, compaction, and the applied position of the replicated log. It
//! knows nothing of gRPC, raft or clients; the server's apply layer drives it.
//!
//! Rules it upholds (docs/architecture.md, "Durability and ordering invariants"):
//! - a `Writer::commit` with `Durability::Sync` returns only after the batch is fsynced; one
//!   with `Durability::Buffered` (the apply path, for entries raft already holds on disk) is
//!   durable with the next synced raft log append, as one RocksDB write-ahead log orders both
//!   (raft_log.rs);
//! - the applied position and the current revision are in the same batch as the changes;
//! - readers never see a revision before its batch is written;
//! - after restart the revision never decreases and the compacted revision is kept.

mod bulk;
mod compact;
mod error;
mod hash;
mod index;
mod key_index;
mod raft_log;
mod revision;
mod snapshot;
pub use snapshot::{SnapshotStats, SnapshotWriter};
mod store;
mod write;

#[cfg(test)]
mod model_tests;

pub use bulk::{BulkLoad, Export, LoadSummary};
pub use error::{Result, StorageError};
pub use hash::KvHash;
pub use index::KeyRange;
pub use raft_log::{RAFT_COMMITTED, RAFT_PURGED, RAFT_VOTE};
pub use revision::Revision;
pub use store::{
    AppliedIndex, KvRead, RangeOptions, RangeResult, ReadView, Store, INITIAL_REVISION, NEVER_COMPACTED,
};
pub use write::{Committed, Durability, ScheduledCompaction, TxnWrite, Writer};
