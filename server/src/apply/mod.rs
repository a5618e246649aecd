//! The apply layer: where requests change the store, one at a time, in order.
//!
//! Writes are proposals sent to a single apply thread. It takes every proposal queued at that
//! moment (up to `MAX_BATCH`), applies them in order into one storage batch and commits it with
//! one fsync; only then are the proposers answered (group commit: one fsync for many writes,
//! no acknowledgement before it). When replication lands, the same apply runs on committed log
//! entries and the sync moves to the raft log.

pub mod check;
pub mod kv;

use std::sync::Arc;
use std::thread;

use rkv_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use rkv_storage::{AppliedIndex, Durability, ScheduledCompaction, Store, Writer};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error};

use crate::error::{Result, ServerError};
use crate::lease::{Lessor, MAX_LEASE_TTL};
use crate::watch::WatchHub;
use kv::LeaseLookup;

/// Most proposals applied in one batch (one fsync).
const MAX_BATCH: usize = 256;
/// Proposals waiting for the apply thread before proposers wait for room.
const QUEUE_DEPTH: usize = 4096;

#[derive(Debug)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// A grant with its ID already chosen (the same on every member that applies it).
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
}

#[derive(Debug)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
}

struct Proposal {
    command: Command,
    reply: oneshot::Sender<Result<CommandResponse>>,
}

/// The handle proposers use; cloning it is cheap.
#[derive(Clone)]
pub struct Applier {
    tx: mpsc::Sender<Proposal>,
}

impl Applier {
    /// Starts the apply thread over `store`. It ends when every `Applier` clone is dropped.
    pub fn start(
        store: Arc<Store>,
        hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        term: u64,
    ) -> std::io::Result<(Self, thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let handle = thread::Builder::new()
            .name("rkv-apply".into())
            .spawn(move || apply_loop(store, hub, lessor, rx, term))?;
        Ok((Self { tx }, handle))
    }

    /// Proposes a write and waits until it is applied and durable.
    pub async fn propose(&self, command: Command) -> Result<CommandResponse> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Proposal { command, reply }).await.map_err(|_| ServerError::Stopped)?;
        rx.await.map_err(|_| ServerError::Stopped)?
    }
}

/// A result whose reply waits for a physical compaction.
struct Pending {
    reply: oneshot::Sender<Result<CommandResponse>>,
    result: Result<CommandResponse>,
    compaction: Option<(ScheduledCompaction, bool)>,
}

fn apply_loop(
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    mut rx: mpsc::Receiver<Proposal>,
    term: u64,
) {
    let mut applied = match store.applied_index() {
        Ok(a) => a.index,
        Err(e) => {
            error!(error = %e, "cannot read the applied index; apply stops");
            return;
        }
    };
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut writer = match store.writer() {
            Ok(w) => w,
            Err(e) => {
                fail_all(batch, &e.to_string());
                continue;
            }
        };
        let captured_prev = hub.wants_prev_kv();
        writer.capture_prev_kv(captured_prev);
        let mut pending = Vec::with_capacity(batch.len());
        let mut broken = None;
        for proposal in batch {
            let before = writer.events().len();
            let applied_cmd = apply_command(&mut writer, &lessor, &proposal.command);
            lessor.track(&writer.events()[before..]);
            if let (Command::LeaseRevoke(r), Ok(_)) = (&proposal.command, &applied_cmd) {
                lessor.revoke(r.id);
            }
            let (result, compaction) = match applied_cmd {
                Ok((resp, compaction)) => (Ok(resp), compaction),
                Err(ServerError::Storage(e)) if !is_client_error(&e) => {
                    broken = Some(e.to_string());
                    (Err(ServerError::Stopped), None)
                }
                Err(e) => (Err(e), None),
            };
            pending.push(Pending { reply: proposal.reply, result, compaction });
            if broken.is_some() {
                break;
            }
        }
        if let Some(reason) = broken {
            error!(%reason, "apply failed; the member stops serving writes");
            drop(writer);
            for p in pending {
                let _ = p.reply.send(Err(ServerError::Stopped));
            }
            return;
        }
        applied += 1;
        match writer.commit(AppliedIndex { term, index: applied }, Durability::Sync) {
            Ok(committed) => {
                debug!(rev = committed.current_rev, writes = pending.len(), "applied batch");
                hub.notify(committed.current_rev, &committed.events, captured_prev);
                for p in pending {
                    finish(&store, p);
                }
            }
            Err(e) => {
                error!(error = %e, "commit failed; the member stops serving writes");
                for p in pending {
                    let _ = p.reply.send(Err(ServerError::Stopped));
                }
                return;
            }
        }
    }
}

fn is_client_error(e: &rkv_storage::StorageError) -> bool {
    matches!(e, rkv_storage::StorageError::Compacted | rkv_storage::StorageError::FutureRevision)
}

fn fail_all(batch: Vec<Proposal>, reason: &str) {
    error!(%reason, "cannot start a write batch");
    for p in batch {
        let _ = p.reply.send(Err(ServerError::Stopped));
    }
}

/// Answers a proposal whose batch is durable; a physical compaction answers when it is done.
fn finish(store: &Arc<Store>, p: Pending) {
    let Pending { reply, result, compaction } = p;
    let Some((scheduled, physical)) = compaction else {
        let _ = reply.send(result);
        return;
    };
    let store = Arc::clone(store);
    let reply = if physical {
        Some((reply, result))
    } else {
        let _ = reply.send(result);
        None
    };
    let spawned = thread::Builder::new().name("rkv-compact".into()).spawn(move || {
        let done = store.finish_compaction(&scheduled);
        if let Err(e) = &done {
            error!(error = %e, rev = scheduled.rev, "physical compaction failed");
        }
        if let Some((reply, result)) = reply {
            let _ = reply.send(done.map_err(ServerError::from).and(result));
        }
    });
    if let Err(e) = spawned {
        error!(error = %e, "cannot start the compaction thread");
    }
}

type Applied = (CommandResponse, Option<(ScheduledCompaction, bool)>);

fn apply_command(writer: &mut Writer<'_>, lessor: &Lessor, command: &Command) -> Result<Applied> {
    match command {
        Command::Put(p) => {
            // A top-level put looks its lease up first, then its previous value (etcd's
            // `applierV3backend.Put`); in a txn the order is the other way round.
            if p.lease != 0 && !lessor.lease_exists(p.lease) {
                return Err(ServerError::LeaseNotFound);
            }
            let mut txn = writer.txn();
            let resp = kv::put(&mut txn, p)?;
            txn.end();
            Ok((CommandResponse::Put(resp), None))
        }
        Command::DeleteRange(d) => {
            let mut txn = writer.txn();
            let resp = kv::delete_range(&mut txn, d)?;
            txn.end();
            Ok((CommandResponse::DeleteRange(resp), None))
        }
        Command::Txn(t) => {
            let mut txn = writer.txn();
            let path = kv::compare_to_path(&txn, t)?;
            kv::check_txn_requests(&txn, t, &path, lessor, true)?;
            let mut resp = match kv::execute_txn(&mut txn, t, &path) {
                Ok(resp) => resp,
                // The checks above make this unreachable; if it happens anyway, the batch holds
                // half a txn that must never be committed: fail the member instead.
                Err(e) if txn.has_changes() => {
                    return Err(ServerError::Storage(rkv_storage::StorageError::Corrupt(format!(
                        "txn failed after it started writing: {e}"
                    ))))
                }
                Err(e) => return Err(e),
            };
            let rev = txn.end();
            resp.header = Some(ResponseHeader { revision: rev, ..Default::default() });
            Ok((CommandResponse::Txn(resp), None))
        }
        Command::Compact(c) => {
            let scheduled = writer.compact(c.revision)?;
            let resp = CompactionResponse {
                header: Some(ResponseHeader { revision: writer.rev(), ..Default::default() }),
            };
            Ok((CommandResponse::Compact(resp), Some((scheduled, c.physical))))
        }
        Command::LeaseGrant(g) => {
            if g.ttl > MAX_LEASE_TTL {
                return Err(ServerError::LeaseTtlTooLarge);
            }
            if lessor.lease_exists(g.id) {
                return Err(ServerError::LeaseExists);
            }
            let ttl = Lessor::effective_ttl(g.ttl);
            writer.put_lease(g.id, ttl)?;
            lessor.grant(g.id, ttl);
            let header = Some(ResponseHeader { revision: writer.rev(), ..Default::default() });
            Ok((
                CommandResponse::LeaseGrant(LeaseGrantResponse {
                    header,
                    id: g.id,
                    ttl,
                    error: String::new(),
                }),
                None,
            ))
        }
        Command::LeaseRevoke(r) => {
            if !lessor.lease_exists(r.id) {
                return Err(ServerError::LeaseNotFound);
            }
            // Every attached key goes in one revision, in key order (etcd's revoke).
            let keys = lessor.keys(r.id);
            let mut txn = writer.txn();
            for key in &keys {
                txn.delete_range(rkv_storage::KeyRange::Single(key))?;
            }
            txn.end();
            writer.delete_lease(r.id)?;
            let header = Some(ResponseHeader { revision: writer.rev(), ..Default::default() });
            Ok((CommandResponse::LeaseRevoke(LeaseRevokeResponse { header }), None))
        }
    }
}
