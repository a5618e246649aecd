//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) over every decoder of untrusted
//! bytes, shared with `tests/fuzz_corpus.rs`, which replays the committed corpus as ordinary
//! tests. Each takes raw bytes, must never panic, and checks what must hold whatever the bytes:
//!
//! - [`ApplyHarness::client_requests`]: gRPC request messages, decoded and checked as the KV and
//!   Lease services do, then applied; a request the checks let through must apply without
//!   poisoning the store, and the index must agree with a full read afterwards.
//! - [`ApplyHarness::raft_entry`]: a log entry as peers send and the log store reads it back,
//!   applied without any client checks (a leader's entry is applied as it is).
//! - [`peer_message`]: the payloads of the peer RPCs and the raft state records on disk.
//! - [`ApplyHarness::snapshot`]: a snapshot stream, raw and re-framed with a valid checksum so
//!   that the records behind it (the MVCC key and value encodings, the meta and lease records)
//!   reach the loader.
//! - [`ApplyHarness::etcd_db`] and [`etcd_wal`]: etcd's bbolt database and WAL segments, as
//!   `snapshot restore` and the takeover of an etcd data dir read them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::EntryPayload;
use prost::Message;
use rkv_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest,
    ResponseHeader, TxnRequest,
};
use rkv_storage::{AppliedIndex, KeyRange, RangeOptions, SnapshotWriter, Store};

use crate::apply::{check, kv, Applier, Command, Proposed};
use crate::auth::AuthStore;
use crate::config::{Config, GRPC_OVERHEAD_BYTES};
use crate::error::ServerError;
use crate::lease::Lessor;
use crate::metrics::{Metrics, MetricsLevel};
use crate::raft::codec::{from_bytes, to_bytes};
use crate::raft::membership::MembershipChange;
use crate::raft::state_machine::{open_entry, RaftApplied};
use crate::raft::{LogId, TypeConfig};
use crate::watch::WatchHub;

mod etcd;
mod seeds;
pub use etcd::etcd_wal;
pub use seeds::seeds;

type Entry = openraft::Entry<TypeConfig>;

/// A member's apply path over a store in a scratch directory, rebuilt when an input poisons
/// it (an unchecked raft entry may).
pub struct ApplyHarness {
    dir: PathBuf,
    generation: u64,
    applier: Arc<Applier>,
    lessor: Arc<Lessor>,
    index: u64,
}

fn open(dir: &Path, generation: u64) -> Result<(Arc<Applier>, Arc<Lessor>), String> {
    let path = dir.join(format!("db-{generation}"));
    let _ = std::fs::remove_dir_all(&path);
    let store = Arc::new(Store::open(&path).map_err(|e| e.to_string())?);
    let hub = WatchHub::new(store.clone(), ResponseHeader::default(), 1 << 20).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new(MetricsLevel::Basic).map_err(|e| e.to_string())?);
    // bcrypt's lowest cost: entries may add users.
    let auth = Arc::new(
        AuthStore::new(
            &store,
            4,
            crate::auth::Tokens::Simple(crate::auth::SimpleTokens::new(std::time::Duration::from_secs(300))),
        )
        .map_err(|e| e.to_string())?,
    );
    let lessor = Arc::new(Lessor::default());
    let applier = Applier::new(store, hub, lessor.clone(), metrics, auth).map_err(|e| e.to_string())?;
    Ok((Arc::new(applier), lessor))
}

/// One harness per fuzzing process, in a scratch directory of the process (opening RocksDB
/// per input would dominate the run).
pub fn process_harness() -> &'static std::sync::Mutex<ApplyHarness> {
    static HARNESS: std::sync::OnceLock<std::sync::Mutex<ApplyHarness>> = std::sync::OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rkv-fuzz-{}", std::process::id()));
        let made = std::fs::create_dir_all(&dir).map_err(|e| e.to_string());
        match made.and_then(|()| ApplyHarness::new(&dir)) {
            Ok(h) => std::sync::Mutex::new(h),
            Err(e) => panic!("cannot set up the fuzz harness in {}: {e}", dir.display()),
        }
    })
}

/// The request kinds of `client_requests`' input, by their tag byte.
const KINDS: u8 = 7;

impl ApplyHarness {
    /// A harness whose stores live under `dir` (which must exist).
    pub fn new(dir: &Path) -> Result<Self, String> {
        let (applier, lessor) = open(dir, 0)?;
        Ok(Self { dir: dir.to_path_buf(), generation: 0, applier, lessor, index: 0 })
    }

    fn reopen(&mut self) {
        let old = self.dir.join(format!("db-{}", self.generation));
        self.generation += 1;
        match open(&self.dir, self.generation) {
            Ok((applier, lessor)) => (self.applier, self.lessor) = (applier, lessor),
            Err(e) => panic!("cannot reopen the harness store: {e}"),
        }
        let _ = std::fs::remove_dir_all(old);
    }

    fn store(&self) -> &Store {
        self.applier.store()
    }

    /// The revision of the harness' store (for tests of the seeds).
    pub fn current_revision(&self) -> i64 {
        self.store().current_revision().unwrap_or_else(|e| panic!("{e}"))
    }

    fn apply(&mut self, proposed: Proposed) -> Result<(), rkv_storage::StorageError> {
        self.index += 1;
        let applied = AppliedIndex { term: 1, index: self.index };
        self.applier.apply_batch(&[Some(proposed)], applied, b"").map(drop)
    }

    /// Input: records `[kind u8][len u16 BE][message]`, each a KV or Lease request (kind modulo
    /// 7: range, put, delete range, txn, compaction, lease grant, lease revoke).
    pub fn client_requests(&mut self, mut data: &[u8]) {
        while let [kind, hi, lo, rest @ ..] = data {
            let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
            let (msg, tail) = rest.split_at(len);
            data = tail;
            let before = self.store().current_revision().unwrap_or_else(|e| panic!("{e}"));
            match self.client_request(kind % KINDS, msg) {
                Ok(()) | Err(Refused::Client(_)) => {}
                Err(Refused::Storage(e)) => panic!("a checked request poisoned the store: {e}"),
            }
            let after = self.store().current_revision().unwrap_or_else(|e| panic!("{e}"));
            assert!(after >= before, "the revision went back from {before} to {after}");
            self.check_index();
        }
    }

    fn client_request(&mut self, kind: u8, msg: &[u8]) -> Result<(), Refused> {
        let defaults = Config::new("fuzz", &self.dir, ([127, 0, 0, 1], 0).into());
        let limit = defaults.max_request_bytes + GRPC_OVERHEAD_BYTES;
        let command = match kind {
            0 => {
                let r = decode::<RangeRequest>(msg, limit)?;
                check::check_range_request(&r)?;
                let view = self.store().read_view().map_err(ServerError::from)?;
                kv::range(&view, &r)?;
                return Ok(());
            }
            1 => {
                let r = decode::<PutRequest>(msg, limit)?;
                check::check_put_request(&r)?;
                Command::Put(r)
            }
            2 => {
                let r = decode::<DeleteRangeRequest>(msg, limit)?;
                check::check_delete_request(&r)?;
                Command::DeleteRange(r)
            }
            3 => {
                let r = decode::<TxnRequest>(msg, limit)?;
                check::check_txn(&r, defaults.max_txn_ops)?;
                if kv::is_txn_read_only(&r) {
                    let mut view = self.store().read_view().map_err(ServerError::from)?;
                    let path = kv::compare_to_path(&view, &r)?;
                    kv::check_txn_requests(&view, &r, &path, &*self.lessor, false)?;
                    kv::execute_txn(&mut view, &r, &path)?;
                    return Ok(());
                }
                Command::Txn(r)
            }
            4 => Command::Compact(decode::<CompactionRequest>(msg, limit)?),
            5 => {
                let mut r = decode::<LeaseGrantRequest>(msg, limit)?;
                if r.id == 0 {
                    r.id = self.index as i64 + 1;
                }
                Command::LeaseGrant(r)
            }
            _ => Command::LeaseRevoke(decode::<LeaseRevokeRequest>(msg, limit)?),
        };
        self.apply(Proposed { command, by: None }).map_err(Refused::Storage)
    }

    /// The key index and the stored history agree: every key the index holds has its value.
    fn check_index(&self) {
        let all = self
            .store()
            .range(KeyRange::Range { start: &[], end: None }, RangeOptions::default())
            .unwrap_or_else(|e| panic!("full read: {e}"));
        assert_eq!(all.kvs.len(), all.count, "the index and the stored values disagree");
    }

    /// Input: one log entry in the log store's and AppendEntries' encoding.
    pub fn raft_entry(&mut self, data: &[u8]) {
        let Ok(entry) = from_bytes::<Entry>(data) else { return };
        round_trips(&entry, |e: &Entry| format!("{e:?}"));
        if let EntryPayload::Normal(proposal) = entry.payload {
            let (commands, _) = open_entry(proposal, entry.log_id.index);
            self.index += 1;
            let applied = AppliedIndex { term: 1, index: self.index };
            if self.applier.apply_batch(&commands, applied, b"").is_err() {
                self.reopen();
            }
        }
    }

    /// Input: `[mode u8]` then the snapshot; mode 0 imports the bytes as they are, any other
    /// reads them as records `[tag u8][key len u8][key][value len u8][value]` and imports a
    /// snapshot of those records with a valid frame and checksum.
    pub fn snapshot(&mut self, data: &[u8]) {
        let Some((mode, body)) = data.split_first() else { return };
        let bytes = if *mode == 0 { body.to_vec() } else { frame_records(body) };
        let stats = Store::snapshot_stats(bytes.as_slice());
        let imported = self.store().import_snapshot(std::io::Cursor::new(&bytes));
        assert!(stats.is_ok() || imported.is_err(), "imported a snapshot that does not verify");
        if imported.is_err() {
            // A refused snapshot changes nothing; a loader error after the write is a corrupt
            // snapshot the member cannot serve from: start over.
            self.reopen();
            return;
        }
        // What was installed can be read, written and compacted without a panic.
        let store = self.store();
        let _ = store.range(KeyRange::Range { start: &[], end: None }, RangeOptions::default());
        let rev = store.current_revision().unwrap_or_default();
        let put = PutRequest { key: b"fuzz".to_vec(), value: b"v".to_vec(), ..Default::default() };
        let compact = CompactionRequest { revision: rev, physical: false };
        for command in [Command::Put(put), Command::Compact(compact)] {
            if self.apply(Proposed { command, by: None }).is_err() {
                self.reopen();
                return;
            }
        }
    }
}

/// Why a request went no further.
enum Refused {
    /// The client gets an error: fine.
    Client(#[allow(dead_code)] ServerError),
    /// The store cannot go on: never for a checked request.
    Storage(rkv_storage::StorageError),
}

impl From<ServerError> for Refused {
    fn from(e: ServerError) -> Self {
        Refused::Client(e)
    }
}

fn decode<M: Message + Default>(msg: &[u8], limit: usize) -> Result<M, Refused> {
    let m = M::decode(msg).map_err(|_| ServerError::UnexpectedResponse)?;
    if m.encoded_len() > limit {
        return Err(ServerError::RequestTooLarge.into());
    }
    Ok(m)
}

fn frame_records(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(mut w) = SnapshotWriter::new(&mut out) else { return Vec::new() };
    while let [tag, klen, rest @ ..] = body {
        let (k, rest) = rest.split_at(usize::from(*klen).min(rest.len()));
        let Some((vlen, rest)) = rest.split_first() else { break };
        let (v, rest) = rest.split_at(usize::from(*vlen).min(rest.len()));
        body = rest;
        if w.record(tag % 4, k, v).is_err() {
            return Vec::new();
        }
    }
    if w.finish().is_err() {
        return Vec::new();
    }
    out
}

/// What decodes re-encodes to something that decodes to the same value.
fn round_trips<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T, show: impl Fn(&T) -> String) {
    let bytes = to_bytes(value).unwrap_or_else(|e| panic!("re-encoding a decoded value: {e}"));
    let again: T = from_bytes(&bytes).unwrap_or_else(|e| panic!("decoding a re-encoded value: {e}"));
    assert_eq!(show(&again), show(value), "a decoded value changed in a round trip");
}

/// Input: `[kind u8]` then the payload of a peer RPC or a raft state record, by kind modulo 6:
/// AppendEntries, Vote, InstallSnapshot, a forwarded membership change, the applied state
/// record, a log position (vote and purge records).
pub fn peer_message(data: &[u8]) {
    let Some((kind, payload)) = data.split_first() else { return };
    fn check<T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(payload: &[u8]) {
        if let Ok(v) = from_bytes::<T>(payload) {
            round_trips(&v, |v| format!("{v:?}"));
        }
    }
    match kind % 6 {
        0 => check::<AppendEntriesRequest<TypeConfig>>(payload),
        1 => check::<VoteRequest<u64>>(payload),
        2 => check::<InstallSnapshotRequest<TypeConfig>>(payload),
        3 => check::<MembershipChange>(payload),
        4 => check::<RaftApplied>(payload),
        _ => check::<Option<LogId>>(payload),
    }
}
