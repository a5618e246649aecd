//! The Maintenance service: Status and the alarm list today; hashes, defragment, snapshot and
//! leadership transfer answer `Unimplemented` until the snapshot/maintenance work lands.

use rkv_proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_server::Maintenance, AlarmRequest, AlarmResponse,
    DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse, HashKvRequest,
    HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest, MoveLeaderResponse, SnapshotRequest,
    SnapshotResponse, StatusRequest, StatusResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Shared;
use crate::error::ServerError;
use crate::version::ETCD_API_VERSION;

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
        match AlarmAction::try_from(r.action) {
            // rkv raises no alarm: the quota is enforced per request (docs/compatibility.md).
            Ok(AlarmAction::Get) => {
                let mut resp = AlarmResponse::default();
                self.shared.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            _ => Err(not_yet("alarm activate/deactivate")),
        }
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
        let is_learner = !metrics.membership_config.membership().voter_ids().any(|id| id == node.id);
        let mut resp = StatusResponse {
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
        self.shared.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn defragment(
        &self,
        _: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || store.defragment())
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::from)?;
        let mut resp = DefragmentResponse { header: None };
        self.shared.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn hash(&self, _: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        Err(not_yet("hash"))
    }

    async fn hash_kv(&self, request: Request<HashKvRequest>) -> Result<Response<HashKvResponse>, Status> {
        let rev = request.into_inner().revision;
        let store = self.shared.store.clone();
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|_| Status::from(ServerError::Stopped))?
            .map_err(ServerError::from)?;
        let mut resp = HashKvResponse {
            header: Some(rkv_proto::etcdserverpb::ResponseHeader {
                revision: h.current_rev,
                ..Default::default()
            }),
            hash: h.hash,
            compact_revision: h.compact_rev,
            hash_revision: h.hash_rev,
        };
        self.shared.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

    async fn snapshot(&self, _: Request<SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(not_yet("snapshot"))
    }

    async fn move_leader(
        &self,
        _: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        Err(not_yet("move-leader"))
    }

    async fn downgrade(&self, _: Request<DowngradeRequest>) -> Result<Response<DowngradeResponse>, Status> {
        Err(not_yet("downgrade"))
    }
}
