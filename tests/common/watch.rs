//! A raw gRPC watch stream for the watch tests.

use std::time::Duration;

use rkv_proto::etcdserverpb::{
    watch_client::WatchClient, watch_request::RequestUnion, WatchCancelRequest, WatchCreateRequest,
    WatchProgressRequest, WatchRequest, WatchResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::{channel, Server};

pub struct WatchConn {
    tx: mpsc::Sender<WatchRequest>,
    rx: mpsc::Receiver<WatchResponse>,
}

pub const WAIT: Duration = Duration::from_secs(20);

impl WatchConn {
    /// Opens a stream. grpc-go (etcd) sends response headers only with the first response, so
    /// the call is awaited in a task that forwards responses, not before the first request.
    pub async fn open(server: &impl Server) -> WatchConn {
        let (tx, req_rx) = mpsc::channel(64);
        let (resp_tx, rx) = mpsc::channel(4096);
        let mut client = WatchClient::new(channel(server).await);
        tokio::spawn(async move {
            let mut stream: Streaming<WatchResponse> = match client.watch(ReceiverStream::new(req_rx)).await {
                Ok(r) => r.into_inner(),
                Err(e) => panic!("watch: {e}"),
            };
            while let Ok(Some(m)) = stream.message().await {
                if resp_tx.send(m).await.is_err() {
                    return;
                }
            }
        });
        WatchConn { tx, rx }
    }

    /// Opens a stream with one watcher, `c`, once the server has answered that it is created.
    pub async fn open_watching(server: &impl Server, c: WatchCreateRequest) -> WatchConn {
        let mut conn = WatchConn::open(server).await;
        conn.create(c).await;
        let created = conn.expect("created").await;
        assert!(created.created, "the first answer to a create is not `created`: {created:?}");
        conn
    }

    pub async fn send(&self, r: RequestUnion) {
        self.tx.send(WatchRequest { request_union: Some(r) }).await.unwrap_or_else(|e| panic!("send: {e}"));
    }

    pub async fn create(&self, c: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(c)).await;
    }

    pub async fn cancel(&self, watch_id: i64) {
        self.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id })).await;
    }

    pub async fn progress(&self) {
        self.send(RequestUnion::ProgressRequest(WatchProgressRequest {})).await;
    }

    /// The next response, or None if none comes within `WAIT`.
    pub async fn next(&mut self) -> Option<WatchResponse> {
        tokio::time::timeout(WAIT, self.rx.recv()).await.ok().flatten()
    }

    /// The next response, which must come.
    pub async fn expect(&mut self, what: &str) -> WatchResponse {
        self.next().await.unwrap_or_else(|| panic!("no {what} within {WAIT:?}"))
    }
}
