//! The Watch service (etcd `v3rpc/watch.go`): one task per stream reads create, cancel and
//! progress requests in order and answers each before reading the next, so Created responses
//! come in request order and before any event of their watcher.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rkv_proto::etcdserverpb::{
    watch_create_request::FilterType, watch_request::RequestUnion, watch_server::Watch, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::Shared;
use crate::error::ServerError;
use crate::watch::{run_syncer, StreamId, WatchHub, WatchSpec, PROGRESS_WATCH_ID};

pub struct WatchService {
    shared: Shared,
}

impl WatchService {
    pub fn new(shared: Shared) -> Self {
        Self { shared }
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        // etcd clients set `hasleader` (clientv3.WithRequireLeader) to have the stream fail
        // rather than wait on a member cut off from its leader.
        let require_leader = request.metadata().get(REQUIRE_LEADER_KEY).is_some_and(|v| v == "true");
        if require_leader && self.shared.node.leader().is_none() {
            return Err(ServerError::NoLeader.into());
        }
        // Who watches: each watch is checked against their read permissions when created.
        let who = self.shared.who(&request);
        let auth = self.shared.applier.auth.clone();
        let mut inbound = request.into_inner();
        let hub = self.shared.hub.clone();
        let (stream, rx, tx, bell) = hub.open_stream();
        let syncer = tokio::spawn(run_syncer(hub.clone(), stream, tx.clone(), bell, hub.max_response_bytes));
        let ticker = tokio::spawn(progress_ticker(
            hub.clone(),
            stream,
            tx.clone(),
            self.shared.config.watch_progress_notify_interval,
        ));
        tokio::spawn(async move {
            while let Some(Ok(req)) = inbound.next().await {
                if let Some(RequestUnion::CreateRequest(c)) = &req.request_union {
                    let permitted = who.as_ref().map_err(|_| ()).and_then(|w| {
                        auth.check(w, &c.key, &c.range_end, crate::auth::Access::Read).map_err(|_| ())
                    });
                    if permitted.is_err() {
                        if !deny(&hub, &tx, c.watch_id).await {
                            break;
                        }
                        continue;
                    }
                }
                if !handle(&hub, stream, &tx, req).await {
                    break;
                }
            }
            hub.close_stream(stream);
            syncer.abort();
            ticker.abort();
        });
        let (hub, delivery) = (self.shared.hub.clone(), self.shared.metrics.watch_delivery.clone());
        let responses = ReceiverStream::new(rx).map(move |resp| {
            let last = resp.events.last().and_then(|e| e.kv.as_ref()).map(|kv| kv.mod_revision);
            if let Some(at) = last.and_then(|rev| hub.durable_at(rev)) {
                delivery.observe(at.elapsed().as_secs_f64());
            }
            Ok(resp)
        });
        if !require_leader {
            return Ok(Response::new(Box::pin(responses)));
        }
        let lost = futures::stream::once(leader_lost(self.shared.clone())).map(Err);
        Ok(Response::new(Box::pin(futures::stream::select(responses, lost))))
    }
}

/// gRPC metadata with which a client asks for its stream to end when there is no leader.
pub const REQUIRE_LEADER_KEY: &str = "hasleader";

/// Resolves once this member has been without a leader for three election timeouts (etcd's
/// `monitorLeader`), with the error the stream ends with.
async fn leader_lost(shared: Shared) -> Status {
    let limit = 3 * shared.config.election_timeout;
    let mut metrics = shared.node.raft.metrics();
    loop {
        let leaderless = metrics.borrow_and_update().current_leader.is_none();
        if leaderless {
            match tokio::time::timeout(limit, metrics.wait_for(|m| m.current_leader.is_some())).await {
                Err(_) => return ServerError::NoLeader.into(),
                Ok(Err(_)) => return ServerError::Stopped.into(),
                Ok(Ok(_)) => continue,
            }
        }
        if metrics.changed().await.is_err() {
            return ServerError::Stopped.into();
        }
    }
}

/// etcd's answer to a watch the user may not read: created and canceled at once, with the
/// gRPC error's text as the reason.
async fn deny(hub: &Arc<WatchHub>, tx: &mpsc::Sender<WatchResponse>, watch_id: i64) -> bool {
    let status = Status::from(ServerError::PermissionDenied);
    let resp = WatchResponse {
        header: hub.header(hub.current_revision()),
        watch_id,
        created: true,
        canceled: true,
        cancel_reason: format!("rpc error: code = {:?} desc = {}", status.code(), status.message()),
        ..Default::default()
    };
    tx.send(resp).await.is_ok()
}

/// Answers one request; false once the client is gone.
async fn handle(
    hub: &Arc<WatchHub>,
    stream: StreamId,
    tx: &mpsc::Sender<WatchResponse>,
    req: WatchRequest,
) -> bool {
    match req.request_union {
        Some(RequestUnion::CreateRequest(c)) => create(hub, stream, tx, c).await,
        Some(RequestUnion::CancelRequest(c)) => {
            if hub.cancel(stream, c.watch_id) {
                let resp = WatchResponse {
                    header: hub.header(hub.current_revision()),
                    watch_id: c.watch_id,
                    canceled: true,
                    ..Default::default()
                };
                return tx.send(resp).await.is_ok();
            }
            true
        }
        Some(RequestUnion::ProgressRequest(_)) => match hub.request_progress(stream) {
            Some(rev) => {
                let resp = WatchResponse {
                    header: hub.header(rev),
                    watch_id: PROGRESS_WATCH_ID,
                    ..Default::default()
                };
                tx.send(resp).await.is_ok()
            }
            None => true,
        },
        None => true,
    }
}

async fn create(
    hub: &Arc<WatchHub>,
    stream: StreamId,
    tx: &mpsc::Sender<WatchResponse>,
    c: WatchCreateRequest,
) -> bool {
    // etcd: an empty key is "\0" (the smallest key); "\0" as range end is every key >= key.
    let key = if c.key.is_empty() { vec![0] } else { c.key };
    let end = match c.range_end.as_slice() {
        [] => None,
        [0] => Some(Vec::new()),
        e => Some(e.to_vec()),
    };
    let spec = WatchSpec {
        key,
        end,
        no_put: c.filters.contains(&(FilterType::Noput as i32)),
        no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
        prev_kv: c.prev_kv,
        progress_notify: c.progress_notify,
        fragment: c.fragment,
    };
    match hub.create(stream, c.watch_id, c.start_revision, spec) {
        Ok((id, rev)) => {
            let resp =
                WatchResponse { header: hub.header(rev), watch_id: id, created: true, ..Default::default() };
            if tx.send(resp).await.is_err() {
                return false;
            }
            hub.activate(stream, id);
            true
        }
        Err(e) => {
            let resp = WatchResponse {
                header: hub.header(hub.current_revision()),
                watch_id: -1,
                created: true,
                canceled: true,
                cancel_reason: e.reason().to_string(),
                ..Default::default()
            };
            tx.send(resp).await.is_ok()
        }
    }
}

/// `--experimental-watch-progress-notify-interval`: an empty response at the current revision
/// to each synced watcher that asked for progress and got no event during the interval.
async fn progress_ticker(
    hub: Arc<WatchHub>,
    stream: StreamId,
    tx: mpsc::Sender<WatchResponse>,
    every: Duration,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (ids, rev) = hub.progress_tick(stream);
        for id in ids {
            let resp = WatchResponse { header: hub.header(rev), watch_id: id, ..Default::default() };
            if tx.send(resp).await.is_err() {
                return;
            }
        }
    }
}
