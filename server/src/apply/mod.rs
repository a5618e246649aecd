//! The apply layer: where committed commands change the store, in log order, on every member.
//!
//! The raft state machine hands over every entry committed since the last call; `apply_batch`
//! applies them in order into one storage batch, commits it with the applied log position, then
//! tells the watch hub. The batch is written without its own fsync: the raft log, fsynced
//! before an entry can commit, is the durable record, and a replay after a crash re-applies
//! from the stored position.

pub mod check;
pub mod kv;

use std::sync::Arc;
use std::thread;

use rkv_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use rkv_proto::rkvpb::MemberAttributes;
use rkv_storage::{AppliedIndex, Durability, ScheduledCompaction, StorageError, Store, Writer};
use tokio::sync::watch;
use tracing::{debug, error};

use crate::error::{Result, ServerError};
use crate::lease::{Lessor, MAX_LEASE_TTL};
use crate::watch::WatchHub;
use kv::LeaseLookup;

/// Where the server layer keeps its own applied state in the store's `cluster` space.
pub const CLUSTER_RAFT_APPLIED: &[u8] = b"raft/applied";
pub const CLUSTER_MEMBER_PREFIX: &[u8] = b"member/";

#[derive(Debug, Clone)]
pub enum Command {
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    /// A grant with its ID already chosen (the same on every member that applies it).
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    /// A member's name and client URLs (etcd publishes them through raft once it serves).
    Publish(MemberAttributes),
}

impl Command {
    pub fn kind(&self) -> &'static str {
        match self {
            Command::Put(_) => "put",
            Command::DeleteRange(_) => "delete_range",
            Command::Txn(_) => "txn",
            Command::Compact(_) => "compact",
            Command::LeaseGrant(_) => "lease_grant",
            Command::LeaseRevoke(_) => "lease_revoke",
            Command::Publish(_) => "publish",
        }
    }
}

#[derive(Debug)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    /// A command without a client-visible result (publish, or a raft entry with no command).
    Done,
}

/// What applying needs: the store, and who hears about applied changes.
pub struct Applier {
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    /// The newest revision whose physical compaction has finished on this member.
    compacted: watch::Sender<i64>,
}

/// The key under which a member's published attributes are stored.
pub fn member_key(member_id: u64) -> Vec<u8> {
    let mut key = CLUSTER_MEMBER_PREFIX.to_vec();
    key.extend_from_slice(&member_id.to_be_bytes());
    key
}

impl Applier {
    pub fn new(store: Arc<Store>, hub: Arc<WatchHub>, lessor: Arc<Lessor>) -> Self {
        let finished = store.compacted_revision().unwrap_or(rkv_storage::NEVER_COMPACTED);
        Self { store, hub, lessor, compacted: watch::channel(finished).0 }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Waits until this member has physically compacted up to `rev` (a `physical` Compact).
    pub async fn wait_compacted(&self, rev: i64) -> Result<()> {
        let mut rx = self.compacted.subscribe();
        rx.wait_for(|done| *done >= rev).await.map_err(|_| ServerError::Stopped)?;
        Ok(())
    }

    /// Applies a batch of committed entries (None: an entry without a command, such as a
    /// membership change) in one storage batch, recording `applied` and the opaque raft state.
    /// An error means the member cannot go on: the store refuses further writes.
    pub fn apply_batch(
        &self,
        commands: &[Option<Command>],
        applied: AppliedIndex,
        raft_state: &[u8],
    ) -> Result<Vec<Option<Result<CommandResponse>>>, StorageError> {
        let mut writer = self.store.writer()?;
        let captured_prev = self.hub.wants_prev_kv();
        writer.capture_prev_kv(captured_prev);
        let mut results = Vec::with_capacity(commands.len());
        let mut compactions = Vec::new();
        for command in commands {
            let Some(command) = command else {
                results.push(None);
                continue;
            };
            let before = writer.events().len();
            let outcome = apply_command(&mut writer, &self.lessor, command);
            self.lessor.track(&writer.events()[before..]);
            if let (Command::LeaseRevoke(r), Ok(_)) = (command, &outcome) {
                self.lessor.revoke(r.id);
            }
            let result = match outcome {
                Ok((resp, compaction)) => {
                    compactions.extend(compaction);
                    Ok(resp)
                }
                Err(ServerError::Storage(e)) if !is_client_error(&e) => return Err(e),
                Err(e) => Err(e),
            };
            results.push(Some(result));
        }
        writer.put_cluster(CLUSTER_RAFT_APPLIED, raft_state)?;
        let committed = writer.commit(applied, Durability::Buffered)?;
        debug!(rev = committed.current_rev, entries = commands.len(), "applied batch");
        self.hub.notify(committed.current_rev, &committed.events, captured_prev);
        for scheduled in compactions {
            self.compact_in_background(scheduled);
        }
        Ok(results)
    }

    /// Deletes compacted history off the apply path; `wait_compacted` hears when it is done.
    fn compact_in_background(&self, scheduled: ScheduledCompaction) {
        let store = Arc::clone(&self.store);
        let compacted = self.compacted.clone();
        let spawned = thread::Builder::new().name("rkv-compact".into()).spawn(move || {
            match store.finish_compaction(&scheduled) {
                Ok(()) => {
                    compacted.send_modify(|done| *done = (*done).max(scheduled.rev));
                }
                Err(e) => error!(error = %e, rev = scheduled.rev, "physical compaction failed"),
            }
        });
        if let Err(e) = spawned {
            error!(error = %e, "cannot start the compaction thread");
        }
    }
}

fn is_client_error(e: &StorageError) -> bool {
    matches!(e, StorageError::Compacted | StorageError::FutureRevision)
}

type Outcome = (CommandResponse, Option<ScheduledCompaction>);

fn apply_command(writer: &mut Writer<'_>, lessor: &Lessor, command: &Command) -> Result<Outcome> {
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
            Ok((CommandResponse::Compact(resp), Some(scheduled)))
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
        Command::Publish(attrs) => {
            writer.put_cluster(&member_key(attrs.member_id), &prost::Message::encode_to_vec(attrs))?;
            Ok((CommandResponse::Done, None))
        }
    }
}
