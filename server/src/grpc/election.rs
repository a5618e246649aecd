//! The Election service (etcd `v3election`): campaigners of election N queue by the create
//! revision of their key `N/<lease in hex>`; the oldest is the leader and its key's value the
//! proclamation. The same steps as etcd's `concurrency.Election`, run in the member.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use rkv_proto::etcdserverpb::{request_op::Request as Op, PutRequest, RangeRequest, TxnRequest, TxnResponse};
use rkv_proto::mvccpb::event::EventType;
use rkv_proto::rkvpb::AuthInfo;
use rkv_proto::v3electionpb::{
    election_server::Election, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest, LeaderResponse,
    ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::recipes::{created_at, name_prefix, op, prefix_end, range_kvs, session_key, Recipes, Undo};
use super::Shared;
use crate::error::ServerError;

pub struct ElectionService {
    recipes: Arc<Recipes>,
}

impl ElectionService {
    pub fn new(shared: Shared) -> Self {
        Self { recipes: Recipes::new(shared) }
    }

    /// Puts `value` on the leader key if it is still the one created at `rev` (etcd's
    /// `Election.Proclaim`).
    async fn proclaim(
        &self,
        who: &AuthInfo,
        key: &[u8],
        rev: i64,
        value: Vec<u8>,
    ) -> Result<TxnResponse, Status> {
        let put = PutRequest { key: key.to_vec(), value, ignore_lease: true, ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(key, rev)],
            success: vec![op(Op::RequestPut(put))],
            failure: vec![],
        };
        let resp = self.recipes.txn(who, txn).await?;
        if !resp.succeeded {
            return Err(ServerError::ElectionNotLeader.into());
        }
        Ok(resp)
    }
}

type LeaderStream = Pin<Box<dyn Stream<Item = Result<LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let recipes = &self.recipes;
        let who = recipes.shared.who(&request)?;
        let r = request.into_inner();
        let lease = recipes.session_lease(&who, r.lease).await?;
        let prefix = name_prefix(&r.name);
        let key = session_key(&prefix, lease);
        let put = PutRequest { key: key.clone(), value: r.value.clone(), lease, ..Default::default() };
        let get = RangeRequest { key: key.clone(), ..Default::default() };
        let txn = TxnRequest {
            compare: vec![created_at(&key, 0)],
            success: vec![op(Op::RequestPut(put))],
            failure: vec![op(Op::RequestRange(get))],
        };
        let queued = recipes.txn(&who, txn).await?;
        let mut rev = queued.header.as_ref().map_or(0, |h| h.revision);
        if !queued.succeeded {
            // This lease campaigns already: keep its place, with the value asked for now.
            let existing = range_kvs(&queued, 0).first().cloned().unwrap_or_default();
            rev = existing.create_revision;
            if existing.value != r.value {
                if let Err(e) = self.proclaim(&who, &key, rev, r.value.clone()).await {
                    Undo::resign(recipes.clone(), who.clone(), key.clone(), rev).fire();
                    return Err(e);
                }
            }
        }
        // etcd resigns only when the caller gives up; on other errors the key stays queued.
        let resign = Undo::resign(recipes.clone(), who.clone(), key.clone(), rev);
        let waited = recipes.wait_deletes(&who, &prefix, rev - 1).await;
        resign.disarm();
        waited?;
        let leader = LeaderKey { name: r.name, key, rev, lease };
        Ok(Response::new(CampaignResponse { header: queued.header, leader: Some(leader) }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let who = self.recipes.shared.who(&request)?;
        let r = request.into_inner();
        let leader = r.leader.ok_or(ServerError::MissingLeaderKey)?;
        // etcd opens a session on the leader's lease first: for lease 0 that grants one.
        self.recipes.session_lease(&who, leader.lease).await?;
        let resp = self.proclaim(&who, &leader.key, leader.rev, r.value).await?;
        Ok(Response::new(ProclaimResponse { header: resp.header }))
    }

    async fn leader(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderResponse>, Status> {
        let who = self.recipes.shared.who(&request)?;
        let prefix = name_prefix(&request.into_inner().name);
        let mut resp = self.recipes.first_created(&who, &prefix).await?;
        if resp.kvs.is_empty() {
            return Err(ServerError::ElectionNoLeader.into());
        }
        Ok(Response::new(LeaderResponse { header: resp.header, kv: Some(resp.kvs.swap_remove(0)) }))
    }

    type ObserveStream = LeaderStream;

    async fn observe(&self, request: Request<LeaderRequest>) -> Result<Response<LeaderStream>, Status> {
        let who = self.recipes.shared.who(&request)?;
        let prefix = name_prefix(&request.into_inner().name);
        let (tx, rx) = mpsc::channel(16);
        let recipes = self.recipes.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = observe(&recipes, &who, &prefix, &tx) => {}
                _ = tx.closed() => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(&self, request: Request<ResignRequest>) -> Result<Response<ResignResponse>, Status> {
        let who = self.recipes.shared.who(&request)?;
        let leader = request.into_inner().leader.ok_or(ServerError::MissingLeaderKey)?;
        self.recipes.session_lease(&who, leader.lease).await?;
        let resp = self.recipes.txn(&who, Undo::resign_txn(&leader.key, leader.rev)).await?;
        Ok(Response::new(ResignResponse { header: resp.header }))
    }
}

/// Sends every proclamation of the election in order (etcd's `Election.observe`): the current
/// leader's value (or, without a leader, the first key put), each later value of that key until
/// it is deleted, then the next leader's. Returns, ending the stream, when a read or watch fails.
async fn observe(
    recipes: &Recipes,
    who: &AuthInfo,
    prefix: &[u8],
    tx: &mpsc::Sender<Result<LeaderResponse, Status>>,
) {
    loop {
        let Ok(mut first) = recipes.first_created(who, prefix).await else { return };
        let (header, kv) = match first.kvs.is_empty() {
            false => (first.header, first.kvs.swap_remove(0)),
            true => {
                let revision = first.header.as_ref().map_or(0, |h| h.revision);
                let Ok(mut watch) = recipes.watch(who, prefix, Some(prefix_end(prefix)), revision) else {
                    return;
                };
                loop {
                    let Ok(resp) = watch.next().await else { return };
                    let put = resp.events.into_iter().find(|e| e.r#type == EventType::Put as i32);
                    if let Some(kv) = put.and_then(|e| e.kv) {
                        let mut header = resp.header.unwrap_or_default();
                        header.revision = kv.mod_revision;
                        break (Some(header), kv);
                    }
                }
            }
        };
        let next = header.as_ref().map_or(0, |h| h.revision) + 1;
        let key = kv.key.clone();
        if tx.send(Ok(LeaderResponse { header, kv: Some(kv) })).await.is_err() {
            return;
        }
        let Ok(mut watch) = recipes.watch(who, &key, None, next) else { return };
        'leader: loop {
            let Ok(resp) = watch.next().await else { return };
            for event in resp.events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leader;
                }
                if tx.send(Ok(LeaderResponse { header: resp.header, kv: event.kv })).await.is_err() {
                    return;
                }
            }
        }
    }
}
