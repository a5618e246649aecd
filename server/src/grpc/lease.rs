//! The Lease service (etcd `v3rpc/lease.go`). Grants and revocations are applied like writes;
//! keep-alives and TTL queries are answered from the lessor.

use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::{Stream, StreamExt};
use rkv_proto::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest, LeaseRevokeResponse,
    LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::apply::Command;
use rkv_proto::rkvpb::AuthInfo;

pub struct LeaseService {
    shared: Shared,
    ids: AtomicU64,
}

impl LeaseService {
    pub fn new(shared: Shared) -> Self {
        Self { shared, ids: AtomicU64::new(0) }
    }

    /// A fresh positive lease ID (etcd draws them from its request ID generator).
    fn new_id(&self) -> i64 {
        loop {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(self.ids.fetch_add(1, Ordering::Relaxed));
            h.write_u64(self.shared.identity.member_id);
            let id = (h.finish() & (i64::MAX as u64)) as i64;
            if id != 0 {
                return id;
            }
        }
    }
}

impl LeaseService {
    /// A LeaseGrant on behalf of `who`, as the RPC answers it (for the lock and election
    /// services' sessions).
    pub async fn grant_as(
        &self,
        who: AuthInfo,
        mut r: LeaseGrantRequest,
    ) -> Result<LeaseGrantResponse, Status> {
        if r.id == 0 {
            r.id = self.new_id();
        }
        let resp = self.shared.propose_for(Command::LeaseGrant(r), Some(who)).await?;
        self.shared.headed(resp)
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let who = self.shared.who(&request)?;
        self.grant_as(who, request.into_inner()).await.map(Response::new)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let who = self.shared.who(&request)?;
        let r = request.into_inner();
        let resp = self.shared.propose_for(Command::LeaseRevoke(r), Some(who)).await?;
        self.shared.reply(resp)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<KeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let shared = Arc::clone(&self.shared);
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                let resp = keep_alive(&shared, req).await;
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let who = self.shared.who(&request)?;
        let r = request.into_inner();
        // etcd 3.5.9+ (CVE-2023-32082): a lease's key names are shown only to whoever may
        // read every one of them, whether or not the request asks for the keys.
        let auth = &self.shared.applier.auth;
        if auth.is_enabled() {
            for key in self.shared.lessor.keys(r.id) {
                auth.check(&who, &key, &[], crate::auth::Access::Read)?;
            }
        }
        // The leader alone knows how much of a lease's TTL is left.
        if let Some(mut leader) = self.shared.node.leader_client().await? {
            let resp = leader.lease_time_to_live(r).await?.into_inner();
            return self.shared.reply(resp);
        }
        Ok(Response::new(time_to_live(&self.shared, r)?))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let leases = self.shared.lessor.list().into_iter().map(|id| LeaseStatus { id }).collect();
        self.shared.reply(LeaseLeasesResponse { header: None, leases })
    }
}

/// Renews a lease on the leader (etcd forwards keep-alives there: it alone expires leases).
async fn keep_alive(shared: &Shared, req: LeaseKeepAliveRequest) -> Result<LeaseKeepAliveResponse, Status> {
    if let Some(mut leader) = shared.node.leader_client().await? {
        let mut resp = leader.lease_keep_alive(req).await?.into_inner();
        shared.fill_header(&mut resp.header)?;
        return Ok(resp);
    }
    // etcd answers an unknown or expired lease with TTL 0.
    let ttl = shared.lessor.renew(req.id).unwrap_or(0);
    let mut resp = LeaseKeepAliveResponse { header: None, id: req.id, ttl };
    shared.fill_header(&mut resp.header)?;
    Ok(resp)
}

/// LeaseTimeToLive from this member's lessor.
pub fn time_to_live(shared: &Shared, r: LeaseTimeToLiveRequest) -> Result<LeaseTimeToLiveResponse, Status> {
    let mut resp = match shared.lessor.time_to_live(r.id, r.keys) {
        Some(t) => LeaseTimeToLiveResponse {
            header: None,
            id: r.id,
            ttl: t.remaining,
            granted_ttl: t.granted,
            keys: t.keys,
        },
        // etcd: a lease that does not exist (any more) has TTL -1.
        None => LeaseTimeToLiveResponse { header: None, id: r.id, ttl: -1, granted_ttl: 0, keys: Vec::new() },
    };
    shared.fill_header(&mut resp.header)?;
    Ok(resp)
}
