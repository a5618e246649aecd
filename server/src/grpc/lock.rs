//! The Lock service (etcd `v3lock`): a lock named N is held by the oldest key under `N/`, each
//! contender's key being `N/<lease in hex>` attached to its lease, so a revoked or expired lease
//! releases the lock. The same steps as etcd's `concurrency.Mutex`, run in the member.

use std::sync::Arc;

use rkv_proto::etcdserverpb::{request_op::Request as Op, PutRequest, RangeRequest, TxnRequest};
use rkv_proto::v3lockpb::{lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse};
use tonic::{Request, Response, Status};

use super::recipes::{created_at, first_created_op, name_prefix, op, range_kvs, session_key, Recipes, Undo};
use super::Shared;
use crate::error::ServerError;

pub struct LockService {
    recipes: Arc<Recipes>,
}

impl LockService {
    pub fn new(shared: Shared) -> Self {
        Self { recipes: Recipes::new(shared) }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let recipes = &self.recipes;
        let who = recipes.shared.who(&request)?;
        let r = request.into_inner();
        let lease = recipes.session_lease(&who, r.lease).await?;
        let prefix = name_prefix(&r.name);
        let key = session_key(&prefix, lease);
        // Queue up (or find this lease already queued) and read the holder in one txn.
        let put = PutRequest { key: key.clone(), lease, ..Default::default() };
        let get = RangeRequest { key: key.clone(), ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(Op::RequestPut(put)), first_created_op(&prefix)],
            failure: vec![op(Op::RequestRange(get)), first_created_op(&prefix)],
        };
        let queued = recipes.txn(&who, txn).await?;
        let my_rev = match queued.succeeded {
            true => queued.header.as_ref().map_or(0, |h| h.revision),
            false => range_kvs(&queued, 0).first().map_or(0, |kv| kv.create_revision),
        };
        if range_kvs(&queued, 1).first().is_none_or(|holder| holder.create_revision == my_rev) {
            return Ok(Response::new(LockResponse { header: queued.header, key }));
        }
        // Until the wait ends, a failure or the caller going away takes the key out of the queue.
        let dequeue = Undo::delete(recipes.clone(), who.clone(), key.clone());
        recipes.wait_deletes(&who, &prefix, my_rev - 1).await?;
        let held = recipes.get(&who, &key).await?;
        dequeue.disarm();
        if held.kvs.is_empty() {
            // The lease ended while waiting: the key went with it.
            return Err(ServerError::SessionExpired.into());
        }
        Ok(Response::new(LockResponse { header: held.header, key }))
    }

    async fn unlock(&self, request: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        let who = self.recipes.shared.who(&request)?;
        let header = self.recipes.delete(&who, &request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse { header }))
    }
}
