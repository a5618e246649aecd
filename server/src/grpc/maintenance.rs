//! The Maintenance service: Status, Alarm, Hash, HashKV, Defragment, Snapshot and MoveLeader;
//! Downgrade answers `Unimplemented` (docs/compatibility.md).

use rkv_proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_server::Maintenance, AlarmRequest, AlarmResponse, AlarmType,
    DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::apply::Command;
use crate::error::ServerError;
use crate::version::ETCD_API_VERSION;

/// etcd's `snapshotSendBufferSize`.
const SNAPSHOT_CHUNK: usize = 32 * 1024;
static SNAPSHOT_SAVES: AtomicU64 = AtomicU64::new(0);

/// Sends the file in chunks, then the SHA-256 of what was sent (etcd's trailer).
fn stream_snapshot(mut file: std::fs::File, tx: tokio::sync::mpsc::Sender<Result<SnapshotResponse, Status>>) {
    use sha2::Digest;
    use std::io::Read;
    let total = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => {
            // A stream that ended here would look like an empty snapshot with a valid hash.
            let _ = tx.blocking_send(Err(Status::internal(format!("etcdserver: snapshot read: {e}"))));
            return;
        }
    };
    let mut sent = 0u64;
    let mut hash = sha2::Sha256::new();
    while sent < total {
        let mut buf = vec![0u8; SNAPSHOT_CHUNK.min((total - sent) as usize)];
        if let Err(e) = file.read_exact(&mut buf) {
            let _ = tx.blocking_send(Err(Status::internal(format!("etcdserver: snapshot read: {e}"))));
            return;
        }
        sent += buf.len() as u64;
        hash.update(&buf);
        let resp = SnapshotResponse {
            header: None,
            remaining_bytes: total - sent,
            blob: buf,
            version: String::new(),
        };
        if tx.blocking_send(Ok(resp)).is_err() {
            return;
        }
    }
    let trailer = SnapshotResponse {
        header: None,
        remaining_bytes: 0,
        blob: hash.finalize().to_vec(),
        version: String::new(),
    };
    let _ = tx.blocking_send(Ok(trailer));
}

pub struct MaintenanceService {
    shared: Shared,
}

impl MaintenanceService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn not_yet(what: &'static str) -> Status {
    ServerError::NotImplemented(what).into()
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, request: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let r = request.into_inner();
        let resp = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => {
                // etcd's GET with alarm NONE lists every alarm; with a type, that type's.
                let alarms = self
                    .shared
                    .applier
                    .alarms()
                    .into_iter()
                    .filter(|a| r.alarm == AlarmType::None as i32 || a.alarm == r.alarm)
                    .collect();
                AlarmResponse { header: None, alarms }
            }
            Ok(_) => self.shared.propose_for(Command::Alarm(r), None).await?,
            Err(_) => return Err(Status::invalid_argument("etcdserver: unknown alarm action")),
        };
        self.shared.reply(resp)
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let store = &self.shared.store;
        let (db_size, in_use) = store.db_size().map_err(ServerError::from)?;
        let node = &self.shared.node;
        let metrics = node.raft.metrics().borrow().clone();
        let leader = metrics.current_leader.unwrap_or(0);
        let mut errors = Vec::new();
        if leader == 0 {
            errors.push(Status::from(ServerError::NoLeader).message().to_string());
        }
        for a in self.shared.applier.alarms() {
            // etcd lists active alarms in their text form.
            let name = AlarmType::try_from(a.alarm).map(|t| t.as_str_name()).unwrap_or("NONE");
            errors.push(format!("memberID:{} alarm:{name} ", a.member_id));
        }
        let is_learner = !metrics.membership_config.membership().voter_ids().any(|id| id == node.id);
        let resp = StatusResponse {
            header: None,
            version: ETCD_API_VERSION.to_string(),
            db_size: db_size as i64,
            leader,
            raft_index: metrics.last_log_index.unwrap_or(0),
            raft_term: crate::raft::node::etcd_term(metrics.current_term),
            raft_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            errors,
            db_size_in_use: in_use as i64,
            is_learner,
            storage_version: String::new(),
            db_size_quota: self.shared.config.quota_backend_bytes as i64,
            downgrade_info: None,
        };
        self.shared.reply(resp)
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        self.shared.check_admin(&request)?;
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::from)?;
        self.shared.reply(DefragmentResponse { header: None })
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        self.shared.check_admin(&request)?;
        let store = self.shared.store.clone();
        let (hash, rev) = tokio::task::spawn_blocking(move || store.hash_all())
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::from)?;
        let resp = HashResponse {
            header: Some(rkv_proto::etcdserverpb::ResponseHeader { revision: rev, ..Default::default() }),
            hash,
        };
        self.shared.reply(resp)
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        self.shared.check_admin(&request)?;
        let rev = request.into_inner().revision;
        let store = self.shared.store.clone();
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::from)?;
        let resp = HashKvResponse {
            header: Some(rkv_proto::etcdserverpb::ResponseHeader {
                revision: h.current_rev,
                ..Default::default()
            }),
            hash: h.hash,
            compact_revision: h.compact_rev,
            hash_revision: h.hash_rev,
        };
        self.shared.reply(resp)
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

    /// A point-in-time copy of the store as etcd's database file (server/src/etcd_files/),
    /// streamed in 32 KiB chunks with the bytes still to come, then etcd's integrity trailer:
    /// a last message holding the SHA-256 of everything sent. Writes go on meanwhile: the copy
    /// reads a RocksDB snapshot into a temporary file, which bbolt's layout needs to seek in.
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.shared.check_admin(&request)?;
        let store = self.shared.store.clone();
        let dir = self.shared.config.data_dir.join("snap");
        let path = dir.join(format!("save-{}.tmp", SNAPSHOT_SAVES.fetch_add(1, Ordering::Relaxed)));
        let file = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<std::fs::File, ServerError> {
                use std::io::Seek;
                let io = |e: std::io::Error| {
                    ServerError::Storage(rkv_storage::StorageError::Io {
                        path: path.display().to_string(),
                        source: e,
                    })
                };
                std::fs::create_dir_all(&dir).map_err(io)?;
                let out = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(io)?;
                // The open handle keeps the data; the name goes now so nothing is left behind,
                // even if the export fails.
                let _ = std::fs::remove_file(&path);
                let (mut file, _) =
                    crate::etcd_files::export::write_snapshot(&store, out, &path.display().to_string())?;
                file.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
                Ok(file)
            })
            .await
            .map_err(|_| Status::from(ServerError::Stopped))??
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || stream_snapshot(file, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        self.shared.check_admin(&request)?;
        let target = request.into_inner().target_id;
        let node = &self.shared.node;
        node.transfer_leadership(target, node.request_deadline()).await?;
        self.shared.reply(MoveLeaderResponse::default())
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("downgrade"))
    }
}
