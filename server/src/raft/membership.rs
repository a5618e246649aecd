//! Membership changes (etcd's MemberAdd, MemberRemove, MemberUpdate, MemberPromote) as raft
//! configuration changes. They are validated and carried out by the leader, against the
//! membership it holds at that moment; other members forward them there.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;
use rkv_proto::rkvpb::RaftMessage;
use serde::{Deserialize, Serialize};
use tokio::time::timeout_at;

use super::codec::{from_bytes, to_bytes};
use super::node::RaftNode;
use super::PeerNode;
use crate::error::{Result, ServerError};

/// etcd allows one learner at a time (`--experimental-max-learners` defaults to 1).
const MAX_LEARNERS: usize = 1;
/// etcd promotes a learner whose log has reached 90% of the leader's.
const PROMOTE_READY_RATIO: f64 = 0.9;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum MembershipChange {
    Add { id: u64, node: PeerNode, learner: bool },
    Remove { id: u64 },
    Update { id: u64, peer_urls: Vec<String> },
    Promote { id: u64 },
}

/// Errors crossing the peer link: the gRPC status a client gets.
type Remote = std::result::Result<(), (i32, String)>;

impl RaftNode {
    /// Carries out a membership change on the leader (forwarding it there) and returns once
    /// it is committed.
    pub async fn change_membership(&self, change: MembershipChange) -> Result<()> {
        let deadline = self.request_deadline();
        let leader = self.wait_leader(deadline).await?;
        if leader == self.id {
            return self.change_membership_local(change).await;
        }
        let mut client = self.peer(leader)?;
        let payload = to_bytes(&change).map_err(|_| ServerError::UnexpectedResponse)?;
        let reply = match timeout_at(deadline, client.change_membership(RaftMessage { payload })).await {
            Err(_) => return Err(ServerError::Timeout),
            Ok(Err(_)) => return Err(ServerError::LeaderChanged),
            Ok(Ok(r)) => r.into_inner(),
        };
        let remote: Remote = from_bytes(&reply.payload).map_err(|_| ServerError::UnexpectedResponse)?;
        remote.map_err(|(code, msg)| ServerError::Remote(tonic::Status::new(tonic::Code::from(code), msg)))
    }

    /// The peer service's side of a forwarded change: its answer, encoded for the forwarder.
    pub async fn change_membership_forwarded(&self, payload: &[u8]) -> Result<Vec<u8>> {
        let result: Remote = match from_bytes::<MembershipChange>(payload) {
            Err(e) => Err((tonic::Code::InvalidArgument as i32, e.to_string())),
            Ok(change) => self.change_membership_local(change).await.map_err(|e| {
                let status = tonic::Status::from(e);
                (status.code() as i32, status.message().to_string())
            }),
        };
        to_bytes(&result)
            .map_err(|e| ServerError::Internal(format!("cannot encode a membership answer: {e}")))
    }

    async fn change_membership_local(&self, change: MembershipChange) -> Result<()> {
        if !self.is_leader() {
            return Err(ServerError::LeaderChanged);
        }
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let nodes: BTreeMap<u64, PeerNode> = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let (changes, retain) = match change {
            MembershipChange::Add { id, node, learner } => {
                if nodes.contains_key(&id) {
                    return Err(ServerError::MemberExists);
                }
                let taken = nodes.values().flat_map(|n| n.peer_urls.iter());
                if taken.into_iter().any(|u| node.peer_urls.contains(u)) {
                    return Err(ServerError::PeerUrlExists);
                }
                if learner {
                    if nodes.len() - voters.len() >= MAX_LEARNERS {
                        return Err(ServerError::TooManyLearners);
                    }
                    (ChangeMembers::AddNodes(BTreeMap::from([(id, node)])), true)
                } else {
                    (ChangeMembers::AddVoters(BTreeMap::from([(id, node)])), true)
                }
            }
            MembershipChange::Remove { id } => {
                if !nodes.contains_key(&id) {
                    return Err(ServerError::MemberNotFound);
                }
                if voters.contains(&id) {
                    (ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                } else {
                    (ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                }
            }
            MembershipChange::Update { id, peer_urls } => {
                let Some(node) = nodes.get(&id) else {
                    return Err(ServerError::MemberNotFound);
                };
                let taken =
                    nodes.iter().filter(|(other, _)| **other != id).flat_map(|(_, n)| n.peer_urls.iter());
                if taken.into_iter().any(|u| peer_urls.contains(u)) {
                    return Err(ServerError::PeerUrlExists);
                }
                let node = PeerNode { name: node.name.clone(), peer_urls };
                (ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
            }
            MembershipChange::Promote { id } => {
                if !nodes.contains_key(&id) {
                    return Err(ServerError::MemberNotFound);
                }
                if voters.contains(&id) {
                    return Err(ServerError::MemberNotLearner);
                }
                let leader_index = metrics.last_log_index.unwrap_or(0) as f64;
                let matched = metrics
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(&id).cloned().flatten())
                    .map(|l| l.index as f64)
                    .unwrap_or(0.0);
                if matched < leader_index * PROMOTE_READY_RATIO {
                    return Err(ServerError::LearnerNotReady);
                }
                (ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            }
        };
        match timeout_at(self.request_deadline(), self.raft.change_membership(changes, retain)).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(ServerError::LeaderChanged)
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                tracing::warn!(error = %e, "membership change refused");
                Err(ServerError::Remote(tonic::Status::failed_precondition(format!("etcdserver: {e}"))))
            }
            Ok(Err(RaftError::Fatal(_))) => Err(ServerError::Stopped),
        }
    }
}
