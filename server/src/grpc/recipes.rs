//! etcd's client-side concurrency recipes (its `clientv3/concurrency` package: sessions, the
//! oldest key under a prefix, waiting for older keys to go), run inside the member for the lock
//! and election services. etcd's servers run them through an in-process client with the
//! caller's context; here they call the KV and Lease services' handlers with the caller's
//! identity, and watch through the member's watch hub, so permissions and errors are the
//! caller's, as in etcd.

use std::sync::Arc;

use rkv_proto::etcdserverpb::{
    compare, range_request::SortOrder, range_request::SortTarget, request_op, Compare, DeleteRangeRequest,
    LeaseGrantRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse, WatchResponse,
};
use rkv_proto::mvccpb::{event::EventType, KeyValue};
use rkv_proto::rkvpb::AuthInfo;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

use super::kv::KvService;
use super::lease::LeaseService;
use super::Shared;
use crate::auth::Access;
use crate::error::ServerError;
use crate::watch::{run_syncer, StreamId, WatchHub, WatchSpec};

/// The TTL of the lease a session grants when the caller gives none (etcd's
/// `concurrency.defaultSessionTTL`). etcd's lock and election servers orphan the session: nobody
/// keeps that lease alive, so such a lock or leadership ends after this long.
const DEFAULT_SESSION_TTL: i64 = 60;

/// The recipes, on behalf of whoever calls the lock or election service.
pub struct Recipes {
    pub shared: Shared,
    kv: KvService,
    lease: LeaseService,
}

impl Recipes {
    pub fn new(shared: Shared) -> Arc<Self> {
        Arc::new(Self {
            kv: KvService::new(shared.clone()),
            lease: LeaseService::new(shared.clone()),
            shared,
        })
    }

    /// The lease a session runs on (etcd's `NewSession(WithLease(lease))`): the caller's, or
    /// for 0 a new one of the default TTL.
    pub async fn session_lease(&self, who: &AuthInfo, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let grant = LeaseGrantRequest { ttl: DEFAULT_SESSION_TTL, id: 0 };
        Ok(self.lease.grant_as(who.clone(), grant).await?.id)
    }

    pub async fn txn(&self, who: &AuthInfo, txn: TxnRequest) -> Result<TxnResponse, Status> {
        self.kv.txn_as(who.clone(), txn).await
    }

    pub async fn get(&self, who: &AuthInfo, key: &[u8]) -> Result<RangeResponse, Status> {
        self.kv.range_as(who.clone(), RangeRequest { key: key.to_vec(), ..Default::default() }).await
    }

    /// Deletes `key`; the response header of the delete.
    pub async fn delete(
        &self,
        who: &AuthInfo,
        key: &[u8],
    ) -> Result<Option<rkv_proto::etcdserverpb::ResponseHeader>, Status> {
        let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
        Ok(self.kv.delete_range_as(who.clone(), delete).await?.header)
    }

    /// The oldest key under `prefix` (clientv3's `WithFirstCreate`), in a read of its own.
    pub async fn first_created(&self, who: &AuthInfo, prefix: &[u8]) -> Result<RangeResponse, Status> {
        self.kv.range_as(who.clone(), first_created(prefix)).await
    }

    /// Returns once no key under `prefix` created at or before `max_create_rev` is left
    /// (etcd's `waitDeletes`): waits for the newest of them to be deleted, then looks again.
    pub async fn wait_deletes(
        &self,
        who: &AuthInfo,
        prefix: &[u8],
        max_create_rev: i64,
    ) -> Result<(), Status> {
        loop {
            let newest = RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                sort_order: SortOrder::Descend as i32,
                sort_target: SortTarget::Create as i32,
                limit: 1,
                max_create_revision: max_create_rev,
                ..Default::default()
            };
            let resp = self.kv.range_as(who.clone(), newest).await?;
            let Some(kv) = resp.kvs.first() else { return Ok(()) };
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            let mut watch = self.watch(who, &kv.key, None, revision)?;
            loop {
                let events = watch.next().await?;
                if events.events.iter().any(|e| e.r#type == EventType::Delete as i32) {
                    break;
                }
            }
        }
    }

    /// A watch on `key` (up to `end`, if given) from `start_revision`, checked against the
    /// caller's read permission like a Watch request.
    pub fn watch(
        &self,
        who: &AuthInfo,
        key: &[u8],
        end: Option<Vec<u8>>,
        start_revision: i64,
    ) -> Result<InternalWatch, Status> {
        let range_end = end.clone().unwrap_or_default();
        self.shared.applier.auth.check(who, key, &range_end, Access::Read)?;
        let spec = WatchSpec {
            key: key.to_vec(),
            end,
            no_put: false,
            no_delete: false,
            prev_kv: false,
            progress_notify: false,
            fragment: false,
        };
        InternalWatch::start(self.shared.hub.clone(), spec, start_revision)
    }
}

/// A watcher of the member's hub with no client stream: its responses come to `next`. Dropping
/// it removes the watcher.
pub struct InternalWatch {
    hub: Arc<WatchHub>,
    stream: StreamId,
    responses: mpsc::Receiver<WatchResponse>,
    syncer: JoinHandle<()>,
}

impl InternalWatch {
    fn start(hub: Arc<WatchHub>, spec: WatchSpec, start_revision: i64) -> Result<Self, Status> {
        let (stream, responses, tx, bell) = hub.open_stream();
        let syncer = tokio::spawn(run_syncer(hub.clone(), stream, tx, bell, hub.max_response_bytes));
        let watch = Self { hub, stream, responses, syncer };
        // A watch of one key or a non-empty range on a fresh stream: neither of create's errors
        // (a duplicate ID, an empty range) can happen, but say so if one does.
        let (id, _) = watch
            .hub
            .create(stream, 0, start_revision, spec)
            .map_err(|e| ServerError::Internal(e.reason().to_string()))?;
        watch.hub.activate(stream, id);
        Ok(watch)
    }

    /// The next response that carries events. A watch canceled because its start revision was
    /// compacted ends with etcd's compaction error.
    pub async fn next(&mut self) -> Result<WatchResponse, Status> {
        loop {
            let resp = self.responses.recv().await.ok_or(ServerError::Stopped)?;
            if resp.canceled {
                return Err(ServerError::Storage(rkv_storage::StorageError::Compacted).into());
            }
            if !resp.events.is_empty() {
                return Ok(resp);
            }
        }
    }
}

impl Drop for InternalWatch {
    fn drop(&mut self) {
        self.hub.close_stream(self.stream);
        self.syncer.abort();
    }
}

/// The range clientv3's `Get(prefix, WithFirstCreate()...)` sends: the oldest key under it.
fn first_created(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        sort_order: SortOrder::Ascend as i32,
        sort_target: SortTarget::Create as i32,
        limit: 1,
        ..Default::default()
    }
}

/// clientv3's `getPrefix`: the smallest key greater than every key with this prefix.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A compare that holds while `key` is at `create_revision` (0: while it does not exist).
pub fn created_at(key: &[u8], create_revision: i64) -> Compare {
    Compare {
        key: key.to_vec(),
        target: compare::CompareTarget::Create as i32,
        result: compare::CompareResult::Equal as i32,
        target_union: Some(compare::TargetUnion::CreateRevision(create_revision)),
        range_end: Vec::new(),
    }
}

pub fn op(request: request_op::Request) -> RequestOp {
    RequestOp { request: Some(request) }
}

/// The range op of `first_created`, for a txn.
pub fn first_created_op(prefix: &[u8]) -> RequestOp {
    op(request_op::Request::RequestRange(first_created(prefix)))
}

/// The key-values of the `index`th response of a txn, if it is a range.
pub fn range_kvs(txn: &TxnResponse, index: usize) -> &[KeyValue] {
    use rkv_proto::etcdserverpb::response_op::Response;
    match txn.responses.get(index).and_then(|r| r.response.as_ref()) {
        Some(Response::ResponseRange(r)) => &r.kvs,
        _ => &[],
    }
}

/// `prefix` + the lease ID in lowercase hex: the key a session holds under a lock or election
/// (clientv3's `fmt.Sprintf("%s%x", prefix, lease)`).
pub fn session_key(prefix: &[u8], lease: i64) -> Vec<u8> {
    let mut key = prefix.to_vec();
    // Go's %x of a negative number is its magnitude with a minus sign.
    let sign = if lease < 0 { "-" } else { "" };
    key.extend_from_slice(format!("{sign}{:x}", lease.unsigned_abs()).as_bytes());
    key
}

/// A lock or election name as the prefix of its keys.
pub fn name_prefix(name: &[u8]) -> Vec<u8> {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix
}

/// What a lock or campaign undoes if it does not finish (the caller went away, or the wait
/// failed): etcd's `Mutex.Unlock` or `Election.Resign` on the way out. Dropping it armed runs
/// the undo in a task of its own, since the request that owned it is gone.
pub struct Undo {
    recipes: Arc<Recipes>,
    who: AuthInfo,
    txn: Option<TxnRequest>,
}

impl Undo {
    /// Deletes `key`.
    pub fn delete(recipes: Arc<Recipes>, who: AuthInfo, key: Vec<u8>) -> Self {
        let delete = DeleteRangeRequest { key, ..Default::default() };
        let txn = TxnRequest {
            success: vec![op(request_op::Request::RequestDeleteRange(delete))],
            ..Default::default()
        };
        Self { recipes, who, txn: Some(txn) }
    }

    /// Deletes `key` if it is still the one created at `rev`.
    pub fn resign(recipes: Arc<Recipes>, who: AuthInfo, key: Vec<u8>, rev: i64) -> Self {
        Self { recipes, who, txn: Some(Self::resign_txn(&key, rev)) }
    }

    /// etcd's resignation: delete the leader key if it is still the one created at `rev`.
    pub fn resign_txn(key: &[u8], rev: i64) -> TxnRequest {
        let delete = DeleteRangeRequest { key: key.to_vec(), ..Default::default() };
        TxnRequest {
            compare: vec![created_at(key, rev)],
            success: vec![op(request_op::Request::RequestDeleteRange(delete))],
            failure: vec![],
        }
    }

    /// The work finished: nothing to undo.
    pub fn disarm(mut self) {
        self.txn = None;
    }

    /// Undoes now (in the background).
    pub fn fire(self) {}
}

impl Drop for Undo {
    fn drop(&mut self) {
        let Some(txn) = self.txn.take() else { return };
        let (recipes, who) = (self.recipes.clone(), self.who.clone());
        tokio::spawn(async move {
            if let Err(e) = recipes.txn(&who, txn).await {
                tracing::warn!(error = %e, "could not release an abandoned lock or campaign key");
            }
        });
    }
}
