//! Proposal batching on the leader. openraft 0.9 appends, fsyncs and commits one client write
//! after another, so a write per entry costs an fsync each however many clients wait. Here
//! the proposals that queue up while earlier entries are in flight go into the log together as
//! one `CommandBatch` entry: one append and one fsync for all of them, each command still
//! applied on its own (its own revision, its own proposer's permissions) and answered with its
//! own result. A lone proposal is written as it is, from its caller's task when an entry slot
//! is free, so a single client waits for nothing.

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use rkv_proto::rkvpb::{raft_command, CommandBatch, RaftCommand};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::{Proposal, Raft};
use crate::apply::CommandResponse;
use crate::error::{Result, ServerError};

/// Entries in flight at once: while these are appended, replicated and applied, the next
/// batch gathers. Two lets one batch's apply overlap the next one's fsync.
const IN_FLIGHT: usize = 2;
/// At most this many commands, and about this many bytes, in one entry (the peers' message
/// limits stay far away; a larger proposal goes alone).
const MAX_COMMANDS: usize = 512;
const MAX_BYTES: usize = 1 << 20;

type Answer = Result<(CommandResponse, u64)>;

struct Queued {
    command: RaftCommand,
    answer: oneshot::Sender<Answer>,
}

pub struct Batcher {
    queue: mpsc::UnboundedSender<Queued>,
    slots: Arc<Semaphore>,
    raft: Raft,
}

impl Batcher {
    /// Starts the batching task (needs a tokio runtime).
    pub fn start(raft: Raft) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(gather(raft.clone(), waiting, Arc::clone(&slots)));
        Self { queue, slots, raft }
    }

    /// Appends the proposal (with others), waits until it is committed and applied here;
    /// returns its result and its entry's log index.
    pub async fn propose(&self, proposal: Proposal, deadline: Instant) -> Answer {
        // A free entry slot means raft has room for an entry now (the gathering task, when
        // idle, waits for proposals holding the other slot): this one goes to raft from the
        // caller's own task, sparing the hand-offs to the gathering task and back. Under load
        // both slots are taken and proposals queue up to be batched as before.
        if let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() {
            let written = timeout_at(deadline, write_one(&self.raft, proposal.0)).await;
            drop(slot);
            return written.unwrap_or(Err(ServerError::Timeout));
        }
        let (answer, answered) = oneshot::channel();
        self.queue.send(Queued { command: proposal.0, answer }).map_err(|_| ServerError::Stopped)?;
        match timeout_at(deadline, answered).await {
            Err(_) => Err(ServerError::Timeout),
            Ok(Err(_)) => Err(ServerError::Stopped),
            Ok(Ok(answer)) => answer,
        }
    }
}

async fn gather(raft: Raft, mut waiting: mpsc::UnboundedReceiver<Queued>, slots: Arc<Semaphore>) {
    let mut carried: Option<Queued> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let first = match carried.take() {
            Some(q) => q,
            None => match waiting.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        let mut bytes = first.command.encoded_len();
        let mut batch = vec![first];
        while batch.len() < MAX_COMMANDS {
            let Ok(next) = waiting.try_recv() else { break };
            let len = next.command.encoded_len();
            if bytes + len > MAX_BYTES {
                carried = Some(next);
                break;
            }
            bytes += len;
            batch.push(next);
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            write(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn write(raft: &Raft, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        let Some(q) = batch.pop() else { return };
        let _ = q.answer.send(write_one(raft, q.command).await);
        return;
    }
    let (commands, answers): (Vec<RaftCommand>, Vec<oneshot::Sender<Answer>>) =
        batch.into_iter().map(|q| (q.command, q.answer)).unzip();
    let entry = RaftCommand {
        command: Some(raft_command::Command::Batch(CommandBatch { commands })),
        auth_info: None,
    };
    match raft.client_write(Proposal(entry)).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            match resp.data.0 {
                Ok(CommandResponse::Batch(results)) if results.len() == answers.len() => {
                    for (answer, result) in answers.into_iter().zip(results) {
                        let _ = answer.send(result.map(|r| (r, index)));
                    }
                }
                other => {
                    tracing::error!(result = ?other.map(|_| ()), "a batch entry applied without its results");
                    for answer in answers {
                        let _ = answer.send(Err(ServerError::UnexpectedResponse));
                    }
                }
            }
        }
        Err(e) => {
            for answer in answers {
                let _ = answer.send(Err(write_error(&e)));
            }
        }
    }
}

/// A proposal written as an entry of its own.
async fn write_one(raft: &Raft, command: RaftCommand) -> Answer {
    match raft.client_write(Proposal(command)).await {
        Ok(resp) => resp.data.0.map(|r| (r, resp.log_id.index)),
        Err(e) => Err(write_error(&e)),
    }
}

/// etcd's answers for a write raft did not take.
fn write_error(e: &RaftError<u64, ClientWriteError<u64, super::PeerNode>>) -> ServerError {
    match e {
        // Leadership moved after this member accepted the proposal: it may still commit, so
        // it is not retried (etcd answers "leader changed" too).
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => ServerError::LeaderChanged,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            tracing::error!(error = %e, "membership error on a data write");
            ServerError::UnexpectedResponse
        }
        RaftError::Fatal(e) => {
            tracing::error!(error = %e, "raft stopped");
            ServerError::Stopped
        }
    }
}
