//! openraft's log storage over the store's `raft_log` and `raft_state` column families.
//! Appends and votes are fsynced before openraft hears that they are done (its contract).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, RaftLogId, RaftLogReader, StorageError, Vote};
use rkv_storage::{Store, RAFT_COMMITTED, RAFT_PURGED, RAFT_VOTE};

use super::codec::{from_bytes, to_bytes};
use super::{LogId, TypeConfig};
use crate::metrics::Metrics;

type Entry = openraft::Entry<TypeConfig>;
type SResult<T> = Result<T, StorageError<u64>>;

#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
    metrics: Arc<Metrics>,
}

impl LogStore {
    pub fn new(store: Arc<Store>, metrics: Arc<Metrics>) -> Self {
        Self { store, metrics }
    }

    /// Runs blocking RocksDB work off the async runtime's threads.
    async fn blocking<T, F>(&self, f: F) -> Result<T, AnyError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, AnyError> + Send + 'static,
    {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| AnyError::error(format!("log store task failed: {e}")))?
    }

    fn read_state<T: serde::de::DeserializeOwned>(store: &Store, key: &[u8]) -> Result<Option<T>, AnyError> {
        match store.raft_state_get(key).map_err(|e| AnyError::new(&e))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(from_bytes(&bytes).map_err(|e| AnyError::new(&e))?)),
        }
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let from = match range.start_bound() {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let to = match range.end_bound() {
        Bound::Included(i) => i.saturating_add(1),
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    };
    (from, to)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> SResult<Vec<Entry>> {
        let (from, to) = bounds(&range);
        self.blocking(move |store| {
            let raw = store.raft_log_range(from, to).map_err(|e| AnyError::new(&e))?;
            raw.iter().map(|(_, bytes)| from_bytes::<Entry>(bytes).map_err(|e| AnyError::new(&e))).collect()
        })
        .await
        .map_err(super::serr::read_logs)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> SResult<LogState<TypeConfig>> {
        self.blocking(|store| {
            let purged: Option<LogId> = LogStore::read_state(store, RAFT_PURGED)?;
            let last = match store.raft_log_last().map_err(|e| AnyError::new(&e))? {
                Some((_, bytes)) => {
                    Some(*from_bytes::<Entry>(&bytes).map_err(|e| AnyError::new(&e))?.get_log_id())
                }
                None => purged,
            };
            Ok(LogState { last_purged_log_id: purged, last_log_id: last })
        })
        .await
        .map_err(super::serr::read_logs)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> SResult<()> {
        let bytes = to_bytes(vote).map_err(|e| super::serr::write_vote(AnyError::new(&e)))?;
        self.blocking(move |store| {
            store.raft_state_put(RAFT_VOTE, &bytes, true).map_err(|e| AnyError::new(&e))
        })
        .await
        .map_err(super::serr::write_vote)
    }

    async fn read_vote(&mut self) -> SResult<Option<Vote<u64>>> {
        self.blocking(|store| LogStore::read_state(store, RAFT_VOTE)).await.map_err(super::serr::read_vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> SResult<()> {
        if let Some(c) = committed {
            self.metrics.server.proposals_committed.set(c.index as i64);
        }
        let bytes = to_bytes(&committed).map_err(|e| super::serr::write(AnyError::new(&e)))?;
        // Not synced: losing it only means re-learning the commit point from the leader.
        self.blocking(move |store| {
            store.raft_state_put(RAFT_COMMITTED, &bytes, false).map_err(|e| AnyError::new(&e))
        })
        .await
        .map_err(super::serr::write)
    }

    async fn read_committed(&mut self) -> SResult<Option<LogId>> {
        self.blocking(|store| Ok(LogStore::read_state::<Option<LogId>>(store, RAFT_COMMITTED)?.flatten()))
            .await
            .map_err(super::serr::read)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> SResult<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for entry in entries {
            let bytes = to_bytes(&entry).map_err(|e| super::serr::write_logs(AnyError::new(&e)))?;
            encoded.push((entry.get_log_id().index, bytes));
        }
        // Inline on openraft's core task, which waits for this append anyway: the blocking
        // pool's hop there and back cost more than the fdatasync it would move.
        let started = std::time::Instant::now();
        let written = self
            .store
            .raft_log_append(encoded.iter().map(|(i, b)| (*i, b.as_slice())))
            .map_err(|e| AnyError::new(&e));
        self.metrics.disk.wal_fsync.observe(started.elapsed().as_secs_f64());
        // The append is synced (raft_log_append fsyncs) before the callback reports it.
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(super::serr::write_logs(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> SResult<()> {
        let from = log_id.index;
        self.blocking(move |store| store.raft_log_truncate(from).map_err(|e| AnyError::new(&e)))
            .await
            .map_err(super::serr::write_logs)
    }

    async fn purge(&mut self, log_id: LogId) -> SResult<()> {
        let bytes = to_bytes(&log_id).map_err(|e| super::serr::write_logs(AnyError::new(&e)))?;
        let upto = log_id.index;
        self.blocking(move |store| store.raft_log_purge(upto, &bytes).map_err(|e| AnyError::new(&e)))
            .await
            .map_err(super::serr::write_logs)
    }
}
