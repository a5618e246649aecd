//! The Cluster service for a single member: the member list is this member; membership
//! changes answer `Unimplemented` until replication lands.

use rkv_proto::etcdserverpb::{
    cluster_server::Cluster, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::Shared;

pub struct ClusterService {
    shared: Shared,
}

impl ClusterService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

fn not_yet() -> Status {
    crate::error::ServerError::NotImplemented("membership change").into()
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(&self, _: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        Err(not_yet())
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(not_yet())
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(not_yet())
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let mut resp = MemberListResponse { header: None, members: self.shared.members()? };
        // etcd's cluster service header carries no revision (it is not a KV response).
        resp.header = Some(rkv_proto::etcdserverpb::ResponseHeader {
            cluster_id: self.shared.identity.cluster_id,
            member_id: self.shared.identity.member_id,
            revision: 0,
            raft_term: self.shared.node.term(),
        });
        Ok(Response::new(resp))
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(not_yet())
    }
}
