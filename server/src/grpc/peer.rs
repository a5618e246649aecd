//! The server half of the peer transport (the client half is `raft::network`): openraft's RPCs from other members, proposals and
//! read-index requests forwarded by followers, and lease keep-alives (the leader's lessor
//! alone keeps lease deadlines).

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use rkv_proto::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use rkv_proto::rkvpb::peer_server::Peer;
use rkv_proto::rkvpb::{RaftCommand, RaftMessage, RaftResult, ReadIndexRequest, ReadIndexResponse};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::lease::time_to_live;
use super::Shared;
use crate::raft::codec::{from_bytes, result_to_proto, to_bytes};
use crate::raft::{PeerNode, Proposal, TypeConfig, NOT_LEADER};

pub struct PeerService {
    shared: Shared,
}

impl PeerService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn decode<T: DeserializeOwned>(msg: RaftMessage) -> Result<T, Status> {
    from_bytes(&msg.payload).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    let payload = to_bytes(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftMessage { payload }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: AppendEntriesRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.shared.node.raft.append_entries(req).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: VoteRequest<u64> = decode(request.into_inner())?;
        encode(&self.shared.node.raft.vote(req).await)
    }

    async fn install_snapshot(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let req: InstallSnapshotRequest<TypeConfig> = decode(request.into_inner())?;
        encode(&self.shared.node.raft.install_snapshot(req).await)
    }

    async fn propose(&self, request: Request<RaftCommand>) -> Result<Response<RaftResult>, Status> {
        let command = request.into_inner();
        if command.command.is_none() {
            return Err(Status::invalid_argument("empty raft command"));
        }
        let node = &self.shared.node;
        let admitted = if node.is_leader() { node.admit(node.request_deadline()).await? } else { None };
        let Some(_in_flight) = admitted else {
            // Refused before it reached the log: the proposer may safely try the new leader.
            return Err(Status::failed_precondition(NOT_LEADER));
        };
        let (result, index) = match node.propose_local(Proposal(command), node.request_deadline()).await {
            Ok((resp, index)) => (Ok(resp), index),
            Err(e) => (Err(e), 0),
        };
        let mut reply = result_to_proto(&result);
        reply.log_index = index;
        Ok(Response::new(reply))
    }

    async fn read_index(&self, _: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let node = &self.shared.node;
        let index = node.joined_read_index(node.request_deadline()).await?;
        Ok(Response::new(ReadIndexResponse { index }))
    }

    async fn change_membership(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let payload = self.shared.node.change_membership_forwarded(&request.into_inner().payload).await?;
        Ok(Response::new(RaftMessage { payload }))
    }

    async fn members(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let metrics = self.shared.node.raft.metrics().borrow().clone();
        let nodes: Vec<(u64, PeerNode)> =
            metrics.membership_config.membership().nodes().map(|(id, n)| (*id, n.clone())).collect();
        encode(&(self.shared.identity.cluster_id, nodes))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<LeaseKeepAliveRequest>,
    ) -> Result<Response<LeaseKeepAliveResponse>, Status> {
        let req = request.into_inner();
        // etcd answers an unknown or expired lease with TTL 0.
        let ttl = self.shared.lessor.renew(req.id).unwrap_or(0);
        self.shared.reply(LeaseKeepAliveResponse { header: None, id: req.id, ttl })
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        Ok(Response::new(time_to_live(&self.shared, request.into_inner())?))
    }

    async fn timeout_now(&self, _: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.shared.node.campaign().await?;
        Ok(Response::new(RaftMessage::default()))
    }
}
