//! openraft's state machine: the MVCC store, driven by the apply layer.
//!
//! Entries are applied in batches (one storage batch each) with the applied log id and the
//! membership recorded in the same batch. Snapshots are the store's own export format, written
//! to a file under `<data-dir>/snap` rather than held in memory; installing one still builds
//! a single write batch of the whole store (`Store::import_snapshot`), which a streamed install
//! is to replace.

use std::io::{Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError};
use rkv_storage::AppliedIndex;
use tracing::info;

use rkv_proto::rkvpb::raft_command::Command::Batch as Batched;
use rkv_proto::rkvpb::RaftCommand;

use super::codec::{command_from_proto, from_bytes, to_bytes};
use super::{Applied, LogId, PeerNode, Proposal, StoredMembership, TypeConfig};
use crate::apply::{Applier, Command, CommandResponse, Proposed, CLUSTER_RAFT_APPLIED};

type Entry = openraft::Entry<TypeConfig>;
type SResult<T> = Result<T, StorageError<u64>>;
type Meta = SnapshotMeta<u64, PeerNode>;

/// The commands of a normal log entry, and whether it is a batch (whose results are answered
/// together). A command that does not decode applies as nothing: peers refuse empty commands
/// before they reach the log, and one that got there anyway must not stop every member.
pub(crate) fn open_entry(proposal: Proposal, index: u64) -> (Vec<Option<Proposed>>, bool) {
    let decode = |command: RaftCommand| match command_from_proto(command) {
        Ok(command) => Some(command),
        Err(e) => {
            tracing::error!(error = %e, index, "log entry without a command");
            None
        }
    };
    match proposal.0 {
        RaftCommand { command: Some(Batched(batch)), .. } => {
            (batch.commands.into_iter().map(decode).collect(), true)
        }
        command => (vec![decode(command)], false),
    }
}

/// What the state machine records with every batch: where it is in the log and the
/// membership it has applied.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct RaftApplied {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

pub fn read_applied(applier: &Applier) -> Result<RaftApplied, AnyError> {
    match applier.store().cluster_get(CLUSTER_RAFT_APPLIED).map_err(|e| AnyError::new(&e))? {
        None => Ok(RaftApplied::default()),
        Some(bytes) => from_bytes(&bytes).map_err(|e| AnyError::new(&e)),
    }
}

/// The newest snapshot file and its meta, shared with the snapshot builder.
#[derive(Default)]
struct Snapshots {
    current: Option<(Meta, PathBuf)>,
    /// The file a snapshot from the leader is being received into.
    receiving: Option<PathBuf>,
}

#[derive(Clone)]
pub struct StateMachine {
    applier: Arc<Applier>,
    dir: PathBuf,
    snapshots: Arc<Mutex<Snapshots>>,
    /// What the store records as applied, kept here so that applying does not read it back.
    applied: Arc<Mutex<RaftApplied>>,
    counter: Arc<AtomicU64>,
    /// Called after a snapshot replaced the store (lessor and watchers follow it).
    on_install: OnInstall,
}

/// What follows the store after a snapshot replaced it; an error fails the install, and raft
/// stops rather than serve from state that no longer matches the store.
pub type OnInstall = Arc<dyn Fn() -> crate::error::Result<()> + Send + Sync>;

impl StateMachine {
    /// `dir` holds snapshot files; it is created if missing and emptied of stale ones.
    pub fn new(applier: Arc<Applier>, dir: PathBuf, on_install: OnInstall) -> std::io::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let applied = read_applied(&applier).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            applier,
            dir,
            snapshots: Arc::default(),
            applied: Arc::new(Mutex::new(applied)),
            counter: Arc::default(),
            on_install,
        })
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, RaftApplied> {
        self.applied.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn snapshots(&self) -> std::sync::MutexGuard<'_, Snapshots> {
        self.snapshots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn temp_path(&self, what: &str) -> PathBuf {
        self.dir.join(format!("{what}-{}.tmp", self.counter.fetch_add(1, Ordering::Relaxed)))
    }

    /// Keeps `path` as the current snapshot and deletes the one it replaces.
    fn set_current(&self, meta: Meta, path: PathBuf) -> std::io::Result<PathBuf> {
        let name = format!("{}.snap", meta.snapshot_id);
        let kept = self.dir.join(name);
        std::fs::rename(&path, &kept)?;
        let old = self.snapshots().current.replace((meta, kept.clone()));
        if let Some((_, old_path)) = old {
            if old_path != kept {
                let _ = std::fs::remove_file(old_path);
            }
        }
        Ok(kept)
    }
}

async fn open_file(path: &PathBuf) -> SResult<Box<tokio::fs::File>> {
    let file =
        tokio::fs::File::open(path).await.map_err(|e| super::serr::read_snapshot(None, AnyError::new(&e)))?;
    Ok(Box::new(file))
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> SResult<Snapshot<TypeConfig>> {
        let path = self.temp_path("build");
        let applier = Arc::clone(&self.applier);
        let out = path.clone();
        let applied = tokio::task::spawn_blocking(move || -> Result<RaftApplied, AnyError> {
            let file = std::fs::File::create(&out).map_err(|e| AnyError::new(&e))?;
            let raw = applier
                .store()
                .export_snapshot(&file, CLUSTER_RAFT_APPLIED)
                .map_err(|e| AnyError::new(&e))?;
            file.sync_all().map_err(|e| AnyError::new(&e))?;
            // The log may be purged up to this snapshot: everything it holds must be durable
            // in the store itself first.
            applier.store().sync_wal().map_err(|e| AnyError::new(&e))?;
            match raw {
                None => Ok(RaftApplied::default()),
                Some(bytes) => from_bytes(&bytes).map_err(|e| AnyError::new(&e)),
            }
        })
        .await
        .map_err(|e| super::serr::write_snapshot(None, AnyError::error(e.to_string())))?
        .map_err(|e| super::serr::write_snapshot(None, e))?;
        let id = match applied.last_applied {
            Some(l) => {
                format!("{}-{}-{}", l.leader_id.term, l.index, self.counter.fetch_add(1, Ordering::Relaxed))
            }
            None => format!("0-0-{}", self.counter.fetch_add(1, Ordering::Relaxed)),
        };
        let meta =
            Meta { last_log_id: applied.last_applied, last_membership: applied.membership, snapshot_id: id };
        let kept = self
            .set_current(meta.clone(), path)
            .map_err(|e| super::serr::write_snapshot(None, AnyError::new(&e)))?;
        info!(snapshot = %meta.snapshot_id, "built raft snapshot");
        Ok(Snapshot { meta, snapshot: open_file(&kept).await? })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> SResult<(Option<LogId>, StoredMembership)> {
        let applied = self.applied().clone();
        Ok((applied.last_applied, applied.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> SResult<Vec<Applied>>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut state = self.applied().clone();
        let mut commands: Vec<Option<Proposed>> = Vec::new();
        // Per entry: how many of `commands` it holds, and whether they are a batch's.
        let mut spans: Vec<(usize, bool)> = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Normal(proposal) => {
                    let (opened, batch) = open_entry(proposal, index);
                    spans.push((opened.len(), batch));
                    commands.extend(opened);
                }
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    spans.push((1, false));
                    commands.push(None);
                }
                EntryPayload::Blank => {
                    spans.push((1, false));
                    commands.push(None);
                }
            }
        }
        let Some(last) = state.last_applied else {
            return Ok(Vec::new());
        };
        let raft_state = to_bytes(&state).map_err(|e| super::serr::write_state_machine(AnyError::new(&e)))?;
        let applied = AppliedIndex { term: last.leader_id.term, index: last.index };
        let applier = Arc::clone(&self.applier);
        let results = if applies_quickly(&commands) && applier.watcher_count() <= MAX_INLINE_WATCHERS {
            applier.apply_batch(&commands, applied, &raft_state)
        } else {
            tokio::task::spawn_blocking(move || applier.apply_batch(&commands, applied, &raft_state))
                .await
                .map_err(|e| super::serr::write_state_machine(AnyError::error(e.to_string())))?
        }
        .map_err(|e| super::serr::write_state_machine(AnyError::new(&e)))?;
        *self.applied() = state;
        let mut results = results.into_iter().map(|r| r.unwrap_or(Ok(CommandResponse::Done)));
        Ok(spans
            .into_iter()
            .map(|(n, batch)| match batch {
                true => Applied(Ok(CommandResponse::Batch(results.by_ref().take(n).collect()))),
                false => Applied(results.next().unwrap_or(Ok(CommandResponse::Done))),
            })
            .collect())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> SResult<Box<tokio::fs::File>> {
        let path = self.temp_path("recv");
        let file = tokio::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| super::serr::write_snapshot(None, AnyError::new(&e)))?;
        if let Some(stale) = self.snapshots().receiving.replace(path) {
            let _ = std::fs::remove_file(stale);
        }
        Ok(Box::new(file))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<tokio::fs::File>) -> SResult<()> {
        let err = |e: AnyError| super::serr::write_snapshot(Some(meta.signature()), e);
        let mut file = snapshot.into_std().await;
        let applier = Arc::clone(&self.applier);
        tokio::task::spawn_blocking(move || -> Result<(), AnyError> {
            file.sync_all().map_err(|e| AnyError::new(&e))?;
            file.seek(SeekFrom::Start(0)).map_err(|e| AnyError::new(&e))?;
            applier.store().import_snapshot(file).map_err(|e| AnyError::new(&e))
        })
        .await
        .map_err(|e| err(AnyError::error(e.to_string())))?
        .map_err(err)?;
        // The received file is the current snapshot now (to send on to others).
        let received = self.snapshots().receiving.take();
        if let Some(path) = received {
            self.set_current(meta.clone(), path).map_err(|e| err(AnyError::new(&e)))?;
        }
        *self.applied() = read_applied(&self.applier).map_err(err)?;
        (self.on_install)().map_err(|e| err(AnyError::new(&e)))?;
        info!(snapshot = %meta.snapshot_id, "installed raft snapshot from the leader");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> SResult<Option<Snapshot<TypeConfig>>> {
        let current = self.snapshots().current.clone();
        match current {
            None => Ok(None),
            Some((meta, path)) => Ok(Some(Snapshot { meta, snapshot: open_file(&path).await? })),
        }
    }
}

/// Above this many watchers the apply's notify (which offers the events to each) is no longer
/// cheap enough to run on the state machine's task.
const MAX_INLINE_WATCHERS: usize = 1_000;

/// A batch that applies in tens of microseconds runs on the state machine's task: the hop to
/// the blocking pool and back costs more than the apply (its write is not synced; the log
/// entry is). Puts and single-key reads and deletes qualify, a few at a time; anything that
/// can touch many keys (ranges, prefix deletes, txns with them), auth (bcrypt) and large
/// batches go to the blocking pool so that the runtime's workers stay free.
fn applies_quickly(commands: &[Option<Proposed>]) -> bool {
    const MAX_INLINE: usize = 16;
    commands.len() <= MAX_INLINE
        && commands.iter().flatten().all(|p| match &p.command {
            Command::Put(_) | Command::LeaseGrant(_) => true,
            Command::DeleteRange(d) => d.range_end.is_empty(),
            Command::Txn(t) => t.success.iter().chain(&t.failure).all(single_key_op),
            _ => false,
        })
}

fn single_key_op(op: &rkv_proto::etcdserverpb::RequestOp) -> bool {
    use rkv_proto::etcdserverpb::request_op::Request;
    match &op.request {
        Some(Request::RequestPut(_)) => true,
        Some(Request::RequestRange(r)) => r.range_end.is_empty(),
        Some(Request::RequestDeleteRange(d)) => d.range_end.is_empty(),
        Some(Request::RequestTxn(_)) | None => false,
    }
}
