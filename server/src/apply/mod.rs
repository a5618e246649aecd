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

use rkv_proto::etcdserverpb::alarm_request::AlarmAction;
use rkv_proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmResponse, AlarmType};
use rkv_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseGrantResponse, LeaseRevokeRequest, LeaseRevokeResponse, PutRequest, PutResponse, ResponseHeader,
    TxnRequest, TxnResponse,
};
use rkv_proto::rkvpb::{auth_command::Request as AuthRequest, AuthInfo, MemberAttributes};
use rkv_storage::{AppliedIndex, Durability, ScheduledCompaction, StorageError, Store, Writer};
use tokio::sync::watch;
use tracing::{debug, error};

use crate::auth::{Access, AuthStore};
use crate::error::{Result, ServerError};
use crate::lease::{LeaseLookup, Lessor, MAX_LEASE_TTL};
use crate::metrics::Metrics;
use crate::watch::WatchHub;

/// Where the server layer keeps its own applied state in the store's `cluster` space.
pub const CLUSTER_RAFT_APPLIED: &[u8] = b"raft/applied";
pub const CLUSTER_MEMBER_PREFIX: &[u8] = b"member/";
pub const CLUSTER_ALARM_PREFIX: &[u8] = b"alarm/";

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
    /// Raise or clear an alarm (etcd's AlarmRequest ACTIVATE/DEACTIVATE).
    Alarm(AlarmRequest),
    /// Users, roles, permissions, auth on/off, a token issued.
    Auth(AuthRequest),
}

/// A command as the log holds it: with who proposed it when a client did (checked against
/// the permissions in force when it applies); None for the members' own commands.
pub struct Proposed {
    pub command: Command,
    pub by: Option<AuthInfo>,
}

#[derive(Debug)]
pub enum CommandResponse {
    Put(PutResponse),
    DeleteRange(DeleteRangeResponse),
    Txn(TxnResponse),
    Compact(CompactionResponse),
    LeaseGrant(LeaseGrantResponse),
    LeaseRevoke(LeaseRevokeResponse),
    Alarm(AlarmResponse),
    /// An auth change; Authenticate's token.
    Auth(Option<String>),
    /// A command without a client-visible result (publish, or a raft entry with no command).
    Done,
    /// The results of a batch entry's commands, in order (see `raft::batch`).
    Batch(Vec<Result<CommandResponse>>),
}

/// What applying needs: the store, and who hears about applied changes.
pub struct Applier {
    store: Arc<Store>,
    hub: Arc<WatchHub>,
    lessor: Arc<Lessor>,
    /// The newest revision whose physical compaction has finished on this member.
    compacted: watch::Sender<i64>,
    /// Active alarms, (member ID, alarm type), as applied (the `alarm/` keys of the store).
    alarms: std::sync::Mutex<std::collections::BTreeSet<(u64, i32)>>,
    metrics: Arc<Metrics>,
    pub auth: Arc<AuthStore>,
}

fn alarm_key(member_id: u64, alarm: i32) -> Vec<u8> {
    let mut key = CLUSTER_ALARM_PREFIX.to_vec();
    key.extend_from_slice(&member_id.to_be_bytes());
    key.extend_from_slice(&alarm.to_be_bytes());
    key
}

/// The active alarms as the store keeps them. A member that cannot read them must not start
/// (or go on after a snapshot) without its NOSPACE alarm: it would take writes past the quota.
fn load_alarms(store: &Store) -> Result<std::collections::BTreeSet<(u64, i32)>> {
    let bad = |k: &[u8]| StorageError::Corrupt(format!("alarm key {k:02x?}"));
    let mut alarms = std::collections::BTreeSet::new();
    for (k, _) in store.cluster_scan(CLUSTER_ALARM_PREFIX)? {
        let rest = &k[CLUSTER_ALARM_PREFIX.len()..];
        let (Some(member), Some(alarm)) = (rest.get(..8), rest.get(8..12)) else {
            return Err(bad(&k).into());
        };
        let member = u64::from_be_bytes(member.try_into().map_err(|_| bad(&k))?);
        let alarm = i32::from_be_bytes(alarm.try_into().map_err(|_| bad(&k))?);
        alarms.insert((member, alarm));
    }
    Ok(alarms)
}

/// The key under which a member's published attributes are stored.
pub fn member_key(member_id: u64) -> Vec<u8> {
    let mut key = CLUSTER_MEMBER_PREFIX.to_vec();
    key.extend_from_slice(&member_id.to_be_bytes());
    key
}

impl Applier {
    /// Watchers an applied batch is offered to; its cost grows with them.
    pub fn watcher_count(&self) -> usize {
        self.hub.watcher_count()
    }

    pub fn new(
        store: Arc<Store>,
        hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        metrics: Arc<Metrics>,
        auth: Arc<AuthStore>,
    ) -> Result<Self> {
        let finished = store.compacted_revision()?;
        let alarms = std::sync::Mutex::new(load_alarms(&store)?);
        Ok(Self { store, hub, lessor, compacted: watch::channel(finished).0, alarms, metrics, auth })
    }

    /// A client's write must be permitted to its proposer by the auth state it applies in
    /// (etcd's authApplierV3).
    fn check_permission(&self, command: &Command, who: &AuthInfo) -> Result<()> {
        if !self.auth.is_enabled() {
            return Ok(());
        }
        // A lease's keys can only be touched by who may write every one of them.
        let lease_keys = |id: i64| -> Result<()> {
            for key in self.lessor.keys(id) {
                self.auth.check(who, &key, &[], Access::Write)?;
            }
            Ok(())
        };
        match command {
            Command::Put(p) => {
                self.auth.check(who, &p.key, &[], Access::Write)?;
                if p.lease != 0 {
                    lease_keys(p.lease)?;
                }
                if p.prev_kv {
                    self.auth.check(who, &p.key, &[], Access::Read)?;
                }
                Ok(())
            }
            Command::DeleteRange(d) => {
                self.auth.check(who, &d.key, &d.range_end, Access::Write)?;
                if d.prev_kv {
                    self.auth.check(who, &d.key, &d.range_end, Access::Read)?;
                }
                Ok(())
            }
            Command::Txn(t) => self.auth.check_txn(who, t),
            Command::LeaseRevoke(r) => lease_keys(r.id),
            _ => Ok(()),
        }
    }

    /// Active alarms, in (member, type) order.
    pub fn alarms(&self) -> Vec<AlarmMember> {
        let alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        alarms.iter().map(|(member_id, alarm)| AlarmMember { member_id: *member_id, alarm: *alarm }).collect()
    }

    /// Re-reads the alarms after the store was replaced by a snapshot.
    pub fn reload_alarms(&self) -> Result<()> {
        *self.alarms.lock().unwrap_or_else(|e| e.into_inner()) = load_alarms(&self.store)?;
        Ok(())
    }

    /// While a NOSPACE alarm is active, writes that add data are refused (etcd's capped
    /// applier); deletes, compaction and reads go on.
    fn capped(&self) -> bool {
        let alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        alarms.iter().any(|(_, a)| *a == AlarmType::Nospace as i32)
    }

    fn apply_alarm(&self, writer: &mut Writer<'_>, r: &AlarmRequest) -> Result<AlarmResponse> {
        let key = (r.member_id, r.alarm);
        let mut alarms = self.alarms.lock().unwrap_or_else(|e| e.into_inner());
        let member = AlarmMember { member_id: r.member_id, alarm: r.alarm };
        let changed = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Activate) if r.alarm != AlarmType::None as i32 && !alarms.contains(&key) => {
                writer.put_cluster(&alarm_key(r.member_id, r.alarm), &[])?;
                alarms.insert(key);
                true
            }
            Ok(AlarmAction::Deactivate) if alarms.contains(&key) => {
                writer.delete_cluster(&alarm_key(r.member_id, r.alarm))?;
                alarms.remove(&key);
                true
            }
            _ => false,
        };
        if changed {
            tracing::warn!(member = %format!("{:x}", r.member_id), alarm = r.alarm, action = r.action, "alarm changed");
        }
        let header = Some(ResponseHeader { revision: writer.rev(), ..Default::default() });
        Ok(AlarmResponse { header, alarms: if changed { vec![member] } else { Vec::new() } })
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
        commands: &[Option<Proposed>],
        applied: AppliedIndex,
        raft_state: &[u8],
    ) -> Result<Vec<Option<Result<CommandResponse>>>, StorageError> {
        let mut writer = self.store.writer()?;
        let captured_prev = self.hub.wants_prev_kv();
        writer.capture_prev_kv(captured_prev);
        let mut results = Vec::with_capacity(commands.len());
        let mut compactions = Vec::new();
        for proposed in commands {
            let Some(Proposed { command, by }) = proposed else {
                results.push(None);
                continue;
            };
            let before = writer.events().len();
            count_ops(&self.metrics, command);
            let permitted = match (by, command) {
                (_, Command::Auth(_)) | (None, _) => Ok(()),
                (Some(who), c) => self.check_permission(c, who),
            };
            let outcome = match command {
                _ if permitted.is_err() => permitted.map(|_| (CommandResponse::Done, None)),
                Command::Alarm(r) => {
                    self.apply_alarm(&mut writer, r).map(|resp| (CommandResponse::Alarm(resp), None))
                }
                Command::Auth(r) => self
                    .auth
                    .apply(&mut writer, by.as_ref(), r)
                    .map(|token| (CommandResponse::Auth(token), None)),
                c if adds_data(c) && self.capped() => Err(ServerError::NoSpace),
                c => apply_command(&mut writer, &self.lessor, c),
            };
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
        let started = std::time::Instant::now();
        let committed = writer.commit(applied, Durability::Buffered)?;
        self.metrics.disk.backend_commit.observe(started.elapsed().as_secs_f64());
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

/// etcd's mvcc counters: puts, deletes and ranges, and txns of more than one of them.
fn count_ops(metrics: &Metrics, command: &Command) {
    match command {
        Command::Put(_) => metrics.mvcc.put_total.inc(),
        Command::DeleteRange(_) => metrics.mvcc.delete_total.inc(),
        Command::Txn(t) => count_txn_ops(metrics, t),
        _ => {}
    }
}

/// etcd counts the ops of the branch that runs; both branches are counted here, an upper
/// bound that needs no second evaluation of the compares.
pub(crate) fn count_txn_ops(metrics: &Metrics, t: &TxnRequest) {
    fn count(metrics: &Metrics, t: &TxnRequest) -> u64 {
        use rkv_proto::etcdserverpb::request_op::Request;
        t.success.iter().chain(&t.failure).fold(0, |n, op| {
            n + match &op.request {
                Some(Request::RequestPut(_)) => {
                    metrics.mvcc.put_total.inc();
                    1
                }
                Some(Request::RequestDeleteRange(_)) => {
                    metrics.mvcc.delete_total.inc();
                    1
                }
                Some(Request::RequestRange(_)) => {
                    metrics.mvcc.range_total.inc();
                    1
                }
                Some(Request::RequestTxn(nested)) => count(metrics, nested),
                None => 0,
            }
        })
    }
    if count(metrics, t) > 1 {
        metrics.mvcc.txn_total.inc();
    }
}

/// Whether a command would grow the store (etcd's quota cost > 0): puts, txns with a put in
/// any branch, lease grants.
fn adds_data(command: &Command) -> bool {
    fn txn_puts(t: &TxnRequest) -> bool {
        use rkv_proto::etcdserverpb::request_op::Request;
        t.success.iter().chain(&t.failure).any(|op| match &op.request {
            Some(Request::RequestPut(_)) => true,
            Some(Request::RequestTxn(nested)) => txn_puts(nested),
            _ => false,
        })
    }
    match command {
        Command::Put(_) | Command::LeaseGrant(_) => true,
        Command::Txn(t) => txn_puts(t),
        _ => false,
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
        // Applied by the Applier itself, which holds their state.
        Command::Alarm(_) | Command::Auth(_) => Err(ServerError::UnexpectedResponse),
        Command::Publish(attrs) => {
            writer.put_cluster(&member_key(attrs.member_id), &prost::Message::encode_to_vec(attrs))?;
            Ok((CommandResponse::Done, None))
        }
    }
}

#[cfg(test)]
mod tests {
    use rkv_storage::{AppliedIndex, Durability, Store};

    use super::*;

    /// An alarm the store cannot give back stops the member instead of being dropped: without
    /// its NOSPACE alarm a member would take writes past the quota.
    #[test]
    fn an_unreadable_alarm_is_an_error() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = Store::open(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut writer = store.writer().unwrap_or_else(|e| panic!("{e}"));
        writer.put_cluster(&alarm_key(7, AlarmType::Nospace as i32), &[]).unwrap_or_else(|e| panic!("{e}"));
        writer
            .commit(AppliedIndex { term: 1, index: 1 }, Durability::Buffered)
            .unwrap_or_else(|e| panic!("{e}"));
        let alarms = load_alarms(&store).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(alarms.into_iter().collect::<Vec<_>>(), vec![(7, AlarmType::Nospace as i32)]);

        let mut writer = store.writer().unwrap_or_else(|e| panic!("{e}"));
        writer.put_cluster(b"alarm/\x01\x02\x03", &[]).unwrap_or_else(|e| panic!("{e}"));
        writer
            .commit(AppliedIndex { term: 1, index: 2 }, Durability::Buffered)
            .unwrap_or_else(|e| panic!("{e}"));
        let err = load_alarms(&store).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(err, "corrupt data: alarm key [61, 6c, 61, 72, 6d, 2f, 01, 02, 03]");
    }
}
