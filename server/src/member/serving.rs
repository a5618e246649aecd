//! Serving: the TLS acceptors and listeners of the peer, client and metrics URLs, the gRPC
//! and HTTP routes on them, and the tasks a started member runs until it stops.

use std::net::SocketAddr;
use std::sync::Arc;

use rkv_proto::etcdserverpb::auth_server::AuthServer;
use rkv_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use rkv_proto::rkvpb::peer_server::PeerServer;
use rkv_proto::v3electionpb::election_server::ElectionServer;
use rkv_proto::v3lockpb::lock_server::LockServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::service::Routes;

use super::{background, boot, compactor, StartError};
use crate::config::{Config, GRPC_OVERHEAD_BYTES};
use crate::grpc::{
    auth::AuthService, cluster::ClusterService, election::ElectionService, kv::KvService,
    lease::LeaseService, lock::LockService, maintenance::MaintenanceService, peer::PeerService,
    watch::WatchService,
};
use crate::listen::{bind, bind_all, serve, serve_metrics, url_hosts};
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::raft::network::MAX_PEER_MESSAGE;
use crate::state::{MemberState, Shared};

type Bound = Vec<(TcpListener, Option<TlsAcceptor>)>;

/// Every listener of a member, bound before it serves (port 0 gets a free port).
pub(super) struct Listeners {
    peer: Bound,
    client: Bound,
    metrics: Vec<TcpListener>,
}

impl Listeners {
    pub(super) fn client_addrs(&self) -> Vec<SocketAddr> {
        self.client.iter().filter_map(|(l, _)| l.local_addr().ok()).collect()
    }
}

/// Builds the TLS acceptors and binds the peer, client and metrics URLs.
pub(super) async fn bind_listeners(config: &Config) -> Result<Listeners, StartError> {
    let peer_acceptor = if config.listen_peer_tls_addrs.is_empty() {
        None
    } else {
        Some(crate::tls::acceptor(
            &config.peer_tls,
            config.tls_versions,
            &config.tls_cipher_suites,
            &boot::peer_fixtures(config),
            &url_hosts(&config.initial_advertise_peer_urls),
        )?)
    };
    let client_acceptor = if config.listen_client_tls_addrs.is_empty() {
        None
    } else {
        Some(crate::tls::acceptor(
            &config.client_tls,
            config.tls_versions,
            &config.tls_cipher_suites,
            &config.data_dir.join("fixtures").join("client"),
            &url_hosts(&config.listen_client_urls),
        )?)
    };
    let peer = bind_all(&config.listen_peer_addrs, &config.listen_peer_tls_addrs, &peer_acceptor).await?;
    let client =
        bind_all(&config.listen_client_addrs, &config.listen_client_tls_addrs, &client_acceptor).await?;
    let mut metrics = Vec::new();
    for addr in &config.listen_metrics_addrs {
        metrics.push(bind(addr).await?);
    }
    Ok(Listeners { peer, client, metrics })
}

/// Serves peers at once, clients once this member's attributes are in the cluster's log (as
/// etcd does, which also means the cluster has a leader), and starts the member's own services.
pub(super) async fn start_serving(
    state: &Shared,
    listeners: Listeners,
    stop: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let peer_routes = {
        let mut builder = Routes::builder();
        builder.add_service(
            PeerServer::new(PeerService::new(state.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_PEER_MESSAGE),
        );
        builder.routes()
    };
    for (listener, tls) in listeners.peer {
        tasks.push(tokio::spawn(serve(listener, tls, peer_routes.clone(), stop.clone(), "peer", None)));
    }
    background::publish(state).await;
    let routes = routes(state);
    let streams = Some(state.config.max_concurrent_streams);
    for (listener, tls) in listeners.client {
        tasks.push(tokio::spawn(serve(listener, tls, routes.clone(), stop.clone(), "client", streams)));
    }
    for listener in listeners.metrics {
        tasks.push(tokio::spawn(serve_metrics(listener, state.clone(), stop.clone())));
    }
    tasks.push(tokio::spawn(background::expire_leases(state.clone(), stop.clone())));
    tasks.push(tokio::spawn(compactor::run(state.clone(), state.config.auto_compaction, stop.clone())));
    tasks.push(tokio::spawn(background::follow_leadership(state.clone(), stop)));
    tasks
}

fn routes(state: &Arc<MemberState>) -> Routes {
    let max_decode = (state.config.max_request_bytes + GRPC_OVERHEAD_BYTES).saturating_mul(4);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    drop(health_reporter);
    let mut builder = Routes::builder();
    builder
        .add_service(KvServer::new(KvService::new(state.clone())).max_decoding_message_size(max_decode))
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(state.clone()))
                .max_decoding_message_size(max_decode),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(state.clone())).max_decoding_message_size(max_decode),
        )
        .add_service(WatchServer::new(WatchService::new(state.clone())).max_decoding_message_size(max_decode))
        .add_service(LeaseServer::new(LeaseService::new(state.clone())).max_decoding_message_size(max_decode))
        .add_service(AuthServer::new(AuthService::new(state.clone())).max_decoding_message_size(max_decode))
        .add_service(LockServer::new(LockService::new(state.clone())).max_decoding_message_size(max_decode))
        .add_service(
            ElectionServer::new(ElectionService::new(state.clone())).max_decoding_message_size(max_decode),
        )
        .add_service(health_service);
    let mut routes = builder.routes();
    let grpc = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() =
        grpc.merge(crate::http::router(state.clone())).layer(GrpcMetricsLayer::new(state.metrics.clone()));
    routes
}
