//! The client half of the peer transport: openraft's RPCs to other members over gRPC, on
//! their peer URLs. Messages are postcard-encoded openraft types inside `rkvpb.RaftMessage`.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::RPCTypes;
use rkv_proto::rkvpb::peer_client::PeerClient;
use rkv_proto::rkvpb::RaftMessage;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::codec::{from_bytes, to_bytes};
use super::{PeerNode, TypeConfig};
use crate::metrics::Metrics;

/// The largest message a peer link carries (a batch of entries or a snapshot chunk).
pub const MAX_PEER_MESSAGE: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How this member connects to https peer URLs (None: it has no peer TLS configured).
pub type PeerTls = Option<Arc<rustls::ClientConfig>>;

/// A lazily connected gRPC client for a member's first peer URL.
pub fn peer_client(node: &PeerNode, tls: &PeerTls) -> Result<PeerClient<Channel>, String> {
    let url = node.peer_urls.first().ok_or_else(|| format!("member {node} has no peer URL"))?;
    // With TLS the connector does the handshake; tonic must not see an https URI, which it
    // would insist on securing itself.
    let plain_url = match url.strip_prefix("https://") {
        Some(rest) => format!("http://{rest}"),
        None => url.clone(),
    };
    let endpoint = Endpoint::from_shared(plain_url)
        .map_err(|e| format!("bad peer URL {url}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5));
    let channel = if url.starts_with("https://") {
        let config =
            tls.clone().ok_or_else(|| format!("peer URL {url} is https but this member has no peer TLS"))?;
        endpoint.connect_with_connector_lazy(crate::tls::connector(config))
    } else {
        endpoint.connect_lazy()
    };
    Ok(PeerClient::new(channel)
        .max_decoding_message_size(MAX_PEER_MESSAGE)
        .max_encoding_message_size(MAX_PEER_MESSAGE))
}

pub struct Network {
    pub self_id: u64,
    pub metrics: Arc<Metrics>,
    pub tls: PeerTls,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &PeerNode) -> PeerLink {
        PeerLink {
            self_id: self.self_id,
            target,
            client: peer_client(node, &self.tls),
            metrics: self.metrics.clone(),
            to: format!("{target:x}"),
        }
    }
}

pub struct PeerLink {
    self_id: u64,
    target: u64,
    client: Result<PeerClient<Channel>, String>,
    metrics: Arc<Metrics>,
    /// The target's ID as etcd's `To` label writes it.
    to: String,
}

type RpcResult<T, E> = Result<T, RPCError<u64, PeerNode, RaftError<u64, E>>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

impl PeerLink {
    /// `heartbeat`: an append without entries, whose reply time is the round trip (the
    /// follower does no disk work for it).
    async fn call<Req, Resp, E>(
        &mut self,
        kind: RPCTypes,
        req: &Req,
        option: &RPCOption,
        heartbeat: bool,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(&LinkError(e.clone())))),
        };
        let payload = to_bytes(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.metrics
            .network
            .peer_sent_bytes
            .with_label_values(&[self.to.as_str()])
            .inc_by(payload.len() as u64);
        let msg = tonic::Request::new(RaftMessage { payload });
        let ttl = option.hard_ttl();
        let mut client = client;
        let call = async {
            match kind {
                RPCTypes::AppendEntries => client.append_entries(msg).await,
                RPCTypes::Vote => client.vote(msg).await,
                RPCTypes::InstallSnapshot => client.install_snapshot(msg).await,
            }
        };
        let started = std::time::Instant::now();
        let replied = tokio::time::timeout(ttl, call).await;
        match &replied {
            Ok(Ok(_)) if heartbeat => self
                .metrics
                .network
                .peer_rtt
                .with_label_values(&[self.to.as_str()])
                .observe(started.elapsed().as_secs_f64()),
            Ok(Ok(_)) => {}
            _ => self.metrics.network.peer_sent_failures.with_label_values(&[self.to.as_str()]).inc(),
        }
        let reply = match replied {
            Err(_) => {
                return Err(RPCError::Timeout(Timeout {
                    action: kind,
                    id: self.self_id,
                    target: self.target,
                    timeout: ttl,
                }))
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                return Err(RPCError::Unreachable(Unreachable::new(&status)))
            }
            Ok(Err(status)) => return Err(RPCError::Network(NetworkError::new(&status))),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let decoded: Result<Resp, RaftError<u64, E>> =
            from_bytes(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        decoded.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>, openraft::error::Infallible> {
        let heartbeat = rpc.entries.is_empty();
        self.call(RPCTypes::AppendEntries, &rpc, &option, heartbeat).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(RPCTypes::InstallSnapshot, &rpc, &option, false).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>, openraft::error::Infallible> {
        self.call(RPCTypes::Vote, &rpc, &option, false).await
    }
}
