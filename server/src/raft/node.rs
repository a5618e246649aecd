//! `RaftNode`: this member's raft, as the gRPC services use it. Writes are proposed on the
//! leader (forwarded there from a follower), reads are made linearizable with ReadIndex, and
//! every wait is bounded by etcd's request timeout with etcd's errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use rkv_proto::rkvpb::peer_client::PeerClient;
use rkv_proto::rkvpb::ReadIndexRequest;
use tokio::time::{timeout_at, Instant};
use tonic::transport::Channel;
use tracing::debug;

use super::codec::result_from_proto;
use super::network::peer_client;
use super::{PeerNode, Proposal, Raft};
use crate::apply::{Command, CommandResponse};
use crate::error::{Result, ServerError};
use crate::metrics::Metrics;

/// etcd's term for an openraft term. etcd bootstraps a cluster in term 1 and elects its first
/// leader in term 2; openraft initializes in term 0 and elects in term 1. After that both add
/// one per election, so reporting openraft's term plus one gives the terms etcd users see.
pub fn etcd_term(openraft_term: u64) -> u64 {
    openraft_term + 1
}

/// Between attempts to reach a leader that could not take a proposal.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The longest one shared ReadIndex round may take (a quorum heartbeat normally takes
/// milliseconds).
const READ_ROUND_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RaftNode {
    pub raft: Raft,
    pub id: u64,
    /// etcd's request timeout: 5s plus two election timeouts.
    request_timeout: Duration,
    clients: Mutex<HashMap<u64, (PeerNode, PeerClient<Channel>)>>,
    metrics: Arc<Metrics>,
    /// True while this leader hands leadership over: new proposals wait (see `transfer`).
    pub(super) transferring: tokio::sync::watch::Sender<bool>,
    /// Proposals admitted into this leader's log and not yet answered.
    pub(super) in_flight: std::sync::atomic::AtomicUsize,
    peer_tls: super::network::PeerTls,
    batcher: super::batch::Batcher,
    reads: Mutex<ReadRounds>,
}

/// Whether a forwarded proposal surely never reached a raft log (so it is safe to retry): it
/// did not leave this member, or the receiver refused it as not the leader.
fn never_sent(status: &tonic::Status) -> bool {
    // tonic's wording for a connection that could not be made, before any request bytes.
    status.message().starts_with("Service was not ready")
        || status.message() == "tcp connect error"
        || (status.code() == tonic::Code::FailedPrecondition && status.message() == super::NOT_LEADER)
}

impl RaftNode {
    pub fn new(
        raft: Raft,
        id: u64,
        election_timeout: Duration,
        metrics: Arc<Metrics>,
        peer_tls: super::network::PeerTls,
    ) -> Self {
        Self {
            batcher: super::batch::Batcher::start(raft.clone()),
            reads: Mutex::default(),
            raft,
            id,
            request_timeout: Duration::from_secs(5) + 2 * election_timeout,
            clients: Mutex::default(),
            metrics,
            transferring: tokio::sync::watch::channel(false).0,
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            peer_tls,
        }
    }

    /// The term as etcd reports it (see `etcd_term`).
    pub fn term(&self) -> u64 {
        etcd_term(self.raft.metrics().borrow().current_term)
    }

    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    pub(crate) fn peer(&self, id: u64) -> Result<PeerClient<Channel>> {
        let node = {
            let metrics = self.raft.metrics().borrow().clone();
            metrics.membership_config.membership().get_node(&id).cloned().ok_or(ServerError::NoLeader)?
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, client)) = clients.get(&id) {
            if *known == node {
                return Ok(client.clone());
            }
        }
        let client = peer_client(&node, &self.peer_tls).map_err(|e| {
            tracing::warn!(member = %format!("{id:x}"), error = %e, "cannot reach member");
            ServerError::NoLeader
        })?;
        clients.insert(id, (node, client.clone()));
        Ok(client)
    }

    /// Waits for a leader (possibly this member) until `deadline`.
    pub(crate) async fn wait_leader(&self, deadline: Instant) -> Result<u64> {
        let mut metrics = self.raft.metrics();
        let found = timeout_at(deadline, async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(ServerError::Stopped);
                }
            }
        })
        .await;
        found.unwrap_or(Err(ServerError::NoLeader))
    }

    /// A peer client for the leader (None when this member leads), waiting for an election.
    pub async fn leader_client(&self) -> Result<Option<PeerClient<Channel>>> {
        let deadline = Instant::now() + self.request_timeout;
        let leader = self.wait_leader(deadline).await?;
        if leader == self.id {
            return Ok(None);
        }
        self.peer(leader).map(Some)
    }

    /// Proposes a write and waits until it is committed and applied on this member.
    /// Proposes one of the member's own commands (publish, lease expiry, alarms, compaction).
    pub async fn propose(&self, command: Command) -> Result<CommandResponse> {
        self.propose_as(command, None).await
    }

    /// Proposes a client's command; `by` is who the client is (checked when it applies).
    pub async fn propose_as(
        &self,
        command: Command,
        by: Option<rkv_proto::rkvpb::AuthInfo>,
    ) -> Result<CommandResponse> {
        self.metrics.server.proposals_pending.inc();
        let result = self.propose_until_done(command, by).await;
        self.metrics.server.proposals_pending.dec();
        // etcd counts proposals that consensus failed, not requests the apply refused.
        if result.as_ref().is_err_and(ServerError::is_consensus_failure) {
            self.metrics.server.proposals_failed.inc();
        }
        result
    }

    async fn propose_until_done(
        &self,
        command: Command,
        by: Option<rkv_proto::rkvpb::AuthInfo>,
    ) -> Result<CommandResponse> {
        let deadline = Instant::now() + self.request_timeout;
        let proposal = Proposal::new(command, by);
        loop {
            let leader = self.wait_leader(deadline).await?;
            if leader == self.id {
                // A leadership transfer that ends while the proposal waits moves it, not yet
                // in any log, to the new leader.
                let Some(_in_flight) = self.admit(deadline).await? else {
                    // Let the member's view of the new leader catch up before asking again.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                };
                return self.propose_local(proposal, deadline).await.map(|(resp, _)| resp);
            }
            match self.forward(leader, &proposal, deadline).await {
                Err(ForwardError::NotSent) => {
                    // The leader is unreachable or no longer leads: give the election a moment
                    // and try again.
                    tokio::time::sleep(RETRY_PAUSE).await;
                    if Instant::now() >= deadline {
                        return Err(ServerError::Timeout);
                    }
                }
                Err(ForwardError::Failed(e)) => return Err(e),
                Ok(resp) => return Ok(resp),
            }
        }
    }

    /// On the leader: appends, waits for commit and apply. Returns the entry's log index.
    pub async fn propose_local(
        &self,
        proposal: Proposal,
        deadline: Instant,
    ) -> Result<(CommandResponse, u64)> {
        self.batcher.propose(proposal, deadline).await
    }

    async fn forward(
        &self,
        leader: u64,
        proposal: &Proposal,
        deadline: Instant,
    ) -> std::result::Result<CommandResponse, ForwardError> {
        // A leader missing from the membership (just removed) is not there to take it.
        let mut client = self.peer(leader).map_err(|_| ForwardError::NotSent)?;
        let msg = proposal.0.clone();
        let reply = match timeout_at(deadline, client.propose(tonic::Request::new(msg))).await {
            Err(_) => return Err(ForwardError::Failed(ServerError::Timeout)),
            Ok(Err(status)) if never_sent(&status) => return Err(ForwardError::NotSent),
            Ok(Err(status)) => {
                debug!(error = %status, "forwarded proposal failed");
                return Err(ForwardError::Failed(ServerError::LeaderChanged));
            }
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let index = reply.log_index;
        let result =
            result_from_proto(reply).map_err(|_| ForwardError::Failed(ServerError::UnexpectedResponse))?;
        // Answer only once this member has applied the entry too, so that the client's next
        // read here sees its write (etcd's proposer waits for its own apply).
        self.wait_applied(index, deadline).await.map_err(ForwardError::Failed)?;
        result.map_err(ForwardError::Failed)
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) -> Result<()> {
        let timeout = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "apply")
            .await
            .map(|_| ())
            .map_err(|_| ServerError::Timeout)
    }

    /// ReadIndex: returns once this member has applied everything committed when the call
    /// started, as confirmed by a quorum (the leader's `ensure_linearizable`).
    pub async fn linearizable_barrier(self: &Arc<Self>) -> Result<()> {
        if self.sole_voter_is_current() {
            return Ok(());
        }
        let deadline = Instant::now() + self.request_timeout;
        loop {
            match self.joined_read_index(deadline).await {
                Ok(index) => return self.wait_applied(index, deadline).await,
                // A read is safe to retry: wait for the election to settle and ask again.
                Err(e) if Instant::now() + RETRY_PAUSE < deadline => {
                    debug!(error = %e, "read index failed; retrying");
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether this member is the only voter, leads, and has applied an entry of its own term.
    /// Then no ReadIndex round is needed: it is the whole quorum, so nothing commits without
    /// it; every write acknowledged before the read was applied here before its answer (a
    /// proposer answers after its apply); and the applied entry of this term means everything
    /// committed under earlier terms is applied too (after a restart the buffered applies of
    /// acknowledged writes may have been lost and redone only up to that entry).
    fn sole_voter_is_current(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
            && m.membership_config.membership().voter_ids().all(|id| id == self.id)
    }

    /// The read index of a ReadIndex round that starts after this call: reads that arrive
    /// together share one round (one quorum confirmation, one request to a remote leader),
    /// as etcd's linearizable read loop does.
    pub async fn joined_read_index(self: &Arc<Self>, deadline: Instant) -> Result<u64> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let start = {
            let mut rounds = self.reads.lock().unwrap_or_else(|e| e.into_inner());
            rounds.waiting.push(answer);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start {
            tokio::spawn(Arc::clone(self).run_read_rounds());
        }
        match timeout_at(deadline, answered).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Ok(Ok(answer)) => answer,
        }
    }

    /// Runs rounds while reads wait; each round answers the reads that were waiting when it
    /// started.
    async fn run_read_rounds(self: Arc<Self>) {
        loop {
            let waiting = {
                let mut rounds = self.reads.lock().unwrap_or_else(|e| e.into_inner());
                if rounds.waiting.is_empty() {
                    rounds.running = false;
                    return;
                }
                std::mem::take(&mut rounds.waiting)
            };
            // A round stuck on a lost leader must not hold back the rounds after it: it gives
            // up after a while and its reads retry (each until its own deadline).
            let deadline = Instant::now() + self.request_timeout.min(READ_ROUND_TIMEOUT);
            let round = async {
                let leader = self.wait_leader(deadline).await?;
                if leader == self.id {
                    self.read_index(deadline).await
                } else {
                    self.remote_read_index(leader, deadline).await
                }
            };
            let result = round.await;
            for answer in waiting {
                let _ = answer.send(result.as_ref().map(|i| *i).map_err(round_error));
            }
        }
    }

    async fn remote_read_index(&self, leader: u64, deadline: Instant) -> Result<u64> {
        let mut client = self.peer(leader)?;
        match timeout_at(deadline, client.read_index(ReadIndexRequest {})).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Err(status)) => {
                debug!(error = %status, "read index from the leader failed");
                Err(ServerError::Timeout)
            }
            Ok(Ok(reply)) => Ok(reply.into_inner().index),
        }
    }

    /// On the leader: the commit index a linearizable read must wait for, once a quorum has
    /// confirmed this member is still the leader.
    pub async fn read_index(&self, deadline: Instant) -> Result<u64> {
        match timeout_at(deadline, self.raft.get_read_log_id()).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Ok((read, _applied))) => Ok(read.map(|l| l.index).unwrap_or(0)),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(ServerError::LeaderChanged)
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => Err(ServerError::Timeout),
            Ok(Err(RaftError::Fatal(_))) => Err(ServerError::Stopped),
        }
    }

    pub fn request_deadline(&self) -> Instant {
        Instant::now() + self.request_timeout
    }
}

/// The reads waiting for the next ReadIndex round, and whether rounds are running.
#[derive(Default)]
pub(super) struct ReadRounds {
    running: bool,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64>>>,
}

/// A round's failure, for each read that shared it (the errors a round can end with).
fn round_error(e: &ServerError) -> ServerError {
    match e {
        ServerError::LeaderChanged => ServerError::LeaderChanged,
        ServerError::NoLeader => ServerError::NoLeader,
        ServerError::Stopped => ServerError::Stopped,
        _ => ServerError::Timeout,
    }
}

enum ForwardError {
    /// The request never reached the leader.
    NotSent,
    Failed(ServerError),
}
