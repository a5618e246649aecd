//! The Cluster service (etcd `v3rpc/member.go`): the member list from the raft membership and
//! membership changes carried out by the leader as raft configuration changes.

use rkv_proto::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse, ResponseHeader,
};
use tonic::{Request, Response, Status};

use super::Shared;
use crate::error::ServerError;
use crate::raft::membership::MembershipChange;
use crate::raft::PeerNode;

pub struct ClusterService {
    shared: Shared,
}

impl ClusterService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }

    /// etcd's cluster service header carries no revision (it is not a KV response).
    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.shared.identity.cluster_id,
            member_id: self.shared.identity.member_id,
            revision: 0,
            raft_term: self.shared.node.term(),
        })
    }

    /// Carries out a change, then lists the members as this member sees them once it has
    /// caught up with the change.
    async fn change(&self, change: MembershipChange) -> Result<Vec<Member>, Status> {
        self.shared.node.change_membership(change).await?;
        self.shared.node.linearizable_barrier().await?;
        Ok(self.shared.members()?)
    }
}

/// etcd accepts peer URLs of the form scheme://host:port (no path).
fn check_urls(urls: &[String]) -> Result<(), ServerError> {
    let valid = |u: &String| {
        let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
        rest.is_some_and(|r| {
            let r = r.trim_end_matches('/');
            !r.contains('/')
                && r.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        })
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(ServerError::MemberBadUrls);
    }
    Ok(())
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        self.shared.check_admin(&request)?;
        let r = request.into_inner();
        check_urls(&r.peer_ur_ls)?;
        // etcd's NewMember for a runtime addition: the URLs, the cluster token and the time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let token = format!("{}{now}", self.shared.config.initial_cluster_token);
        let id = crate::identity::compute_member_id(&r.peer_ur_ls, &token);
        let node = PeerNode { name: String::new(), peer_urls: r.peer_ur_ls.clone() };
        let members = self.change(MembershipChange::Add { id, node, learner: r.is_learner }).await?;
        let member = Member {
            id,
            name: String::new(),
            peer_ur_ls: r.peer_ur_ls,
            client_ur_ls: Vec::new(),
            is_learner: r.is_learner,
        };
        Ok(Response::new(MemberAddResponse { header: self.header(), member: Some(member), members }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        self.shared.check_admin(&request)?;
        let id = request.into_inner().id;
        self.shared.node.change_membership(MembershipChange::Remove { id }).await?;
        // A member that removed itself can no longer read through the cluster: it lists its own
        // view, which has the removal once it has applied it.
        if id != self.shared.identity.member_id {
            self.shared.node.linearizable_barrier().await?;
        }
        let members = self.shared.members()?;
        Ok(Response::new(MemberRemoveResponse { header: self.header(), members }))
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.shared.check_admin(&request)?;
        let r = request.into_inner();
        check_urls(&r.peer_ur_ls)?;
        let members = self.change(MembershipChange::Update { id: r.id, peer_urls: r.peer_ur_ls }).await?;
        Ok(Response::new(MemberUpdateResponse { header: self.header(), members }))
    }

    async fn member_list(
        &self,
        _: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse { header: self.header(), members: self.shared.members()? }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.shared.check_admin(&request)?;
        let id = request.into_inner().id;
        let members = self.change(MembershipChange::Promote { id }).await?;
        Ok(Response::new(MemberPromoteResponse { header: self.header(), members }))
    }
}
