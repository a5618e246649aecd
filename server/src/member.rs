//! A running member: the embed API (start a member in-process, like etcd's `embed` package)
//! and `run`, what the `rkv` binary does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rkv_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, maintenance_server::MaintenanceServer,
};
use rkv_storage::Store;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tracing::{error, info, warn};

use crate::apply::Applier;
use crate::config::{Config, GRPC_OVERHEAD_BYTES};
use crate::grpc::lease::{expire_leases, LeaseService};
use crate::grpc::{
    cluster::ClusterService, kv::KvService, maintenance::MaintenanceService, watch::WatchService,
};
use crate::identity::{self, Identity, IdentityError};
use crate::lease::Lessor;
use crate::watch::WatchHub;
use rkv_proto::etcdserverpb::{lease_server::LeaseServer, watch_server::WatchServer, ResponseHeader};

/// What every service of a member shares.
pub struct MemberState {
    pub config: Config,
    pub identity: Identity,
    pub store: Arc<Store>,
    pub applier: Applier,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    /// The database size, refreshed at most every `DB_SIZE_REFRESH` (reading RocksDB's
    /// properties on every write would put that work on the write path).
    db_size: DbSizeCache,
    /// The term this member serves in: one more than the last one it applied in, as a
    /// single-member etcd elects itself again at each start.
    pub term: u64,
}

const DB_SIZE_REFRESH: Duration = Duration::from_secs(1);

#[derive(Default)]
struct DbSizeCache {
    bytes: std::sync::atomic::AtomicU64,
    /// When `bytes` was read; None before the first read.
    at: std::sync::Mutex<Option<std::time::Instant>>,
}

impl MemberState {
    /// The database size for quota checks, at most `DB_SIZE_REFRESH` old.
    pub fn db_size_for_quota(&self) -> Result<u64, rkv_storage::StorageError> {
        use std::sync::atomic::Ordering;
        let mut at = self.db_size.at.lock().unwrap_or_else(|e| e.into_inner());
        if at.is_none_or(|t| t.elapsed() >= DB_SIZE_REFRESH) {
            let (size, _) = self.store.db_size()?;
            self.db_size.bytes.store(size, Ordering::Relaxed);
            *at = Some(std::time::Instant::now());
        }
        Ok(self.db_size.bytes.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] IdentityError),
    #[error("cannot open the store: {0}")]
    Store(#[from] rkv_storage::StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the apply thread: {0}")]
    Thread(std::io::Error),
}

/// A started member. Dropping it without `stop` leaves its tasks running until the runtime ends.
pub struct Member {
    client_addrs: Vec<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<MemberState>,
    apply_thread: std::thread::JoinHandle<()>,
    /// Lets `stop` wait until the store is closed and the data dir can be opened again.
    store_ref: std::sync::Weak<Store>,
}

impl Member {
    /// Opens the data dir and the store, binds the client URLs and starts serving.
    pub async fn start(config: Config) -> Result<Member, StartError> {
        let member_id =
            identity::compute_member_id(&config.initial_advertise_peer_urls, &config.initial_cluster_token);
        let fresh = Identity { member_id, cluster_id: identity::compute_cluster_id(&[member_id]) };
        let identity = identity::open_data_dir(&config.data_dir, fresh)?;
        let db_path = identity::db_path(&config.data_dir);
        let store = Arc::new(
            tokio::task::spawn_blocking(move || Store::open(db_path))
                .await
                .map_err(|e| StartError::Thread(std::io::Error::other(e.to_string())))??,
        );
        let last_term = store.applied_index()?.term;
        let term = last_term.max(1) + 1;
        let header = ResponseHeader {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            revision: 0,
            raft_term: term,
        };
        let hub = WatchHub::new(store.clone(), header, config.max_request_bytes)?;
        let lessor = Arc::new(Lessor::restore(store.leases()?, store.leased_keys()?));
        let (applier, apply_thread) =
            Applier::start(store.clone(), hub.clone(), lessor.clone(), term).map_err(StartError::Thread)?;
        let store_ref = Arc::downgrade(&store);
        for flag in &config.ignored {
            warn!(flag = %flag, "etcd flag accepted but not used by rkv");
        }

        let mut listeners = Vec::new();
        for addr in &config.listen_client_addrs {
            let listener =
                TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr: *addr, source })?;
            listeners.push(listener);
        }
        let client_addrs: Vec<SocketAddr> = listeners.iter().filter_map(|l| l.local_addr().ok()).collect();

        let db_size = DbSizeCache::default();
        let state = Arc::new(MemberState { config, identity, store, applier, hub, lessor, db_size, term });
        let routes = routes(&state);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for listener in listeners {
            let routes = routes.clone();
            let mut stop = stop_rx.clone();
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(s)
                })
            });
            tasks.push(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                };
                let served = tonic::transport::Server::builder()
                    .accept_http1(true)
                    .http2_keepalive_interval(Some(Duration::from_secs(7200)))
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await;
                if let Err(e) = served {
                    error!(error = %e, "client server stopped with an error");
                }
            }));
        }
        tasks.push(tokio::spawn(expire_leases(state.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(crate::compactor::run(
            state.clone(),
            state.config.auto_compaction,
            stop_rx.clone(),
        )));
        info!(
            name = %state.config.name,
            member_id = %format!("{:x}", state.identity.member_id),
            cluster_id = %format!("{:x}", state.identity.cluster_id),
            urls = ?state.config.advertise_client_urls,
            "ready to serve client requests"
        );
        Ok(Member { client_addrs, stop_tx, tasks, state, apply_thread, store_ref })
    }

    /// The addresses actually bound (port 0 in the config gets a free port).
    pub fn client_addrs(&self) -> &[SocketAddr] {
        &self.client_addrs
    }

    pub fn member_id(&self) -> u64 {
        self.state.identity.member_id
    }

    pub fn cluster_id(&self) -> u64 {
        self.state.identity.cluster_id
    }

    /// Stops serving, waits for in-flight requests, the apply thread and the store to close.
    pub async fn stop(self) {
        let _ = self.stop_tx.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        info!("stopped serving client requests");
        // The last proposer handle goes with the state: the apply thread drains and ends.
        drop(self.state);
        let apply_thread = self.apply_thread;
        let _ = tokio::task::spawn_blocking(move || apply_thread.join()).await;
        // Reads still running on the blocking pool hold the store a little longer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.store_ref.strong_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if self.store_ref.strong_count() > 0 {
            warn!("store still in use after stop");
        } else {
            info!("store closed");
        }
    }
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
        .add_service(health_service);
    let mut routes = builder.routes();
    let grpc = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() = grpc.merge(crate::http::router(state.clone()));
    routes
}

/// What the `rkv` binary does: start, serve until SIGINT or SIGTERM, stop cleanly.
pub async fn run(config: Config) -> Result<(), StartError> {
    let member = Member::start(config).await?;
    wait_for_signal().await;
    info!("received signal; shutting down");
    member.stop().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
