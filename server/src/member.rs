//! A running member: the embed API (start a member in-process, like etcd's `embed` package)
//! and `run`, what the `rkv` binary does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rkv_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, maintenance_server::MaintenanceServer,
};
use rkv_storage::Store;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tracing::{error, info, warn};

use crate::apply::{Applier, Command, CLUSTER_MEMBER_PREFIX};
use crate::auth::jwt::JwtTokens;
use crate::auth::{AuthStore, SimpleTokens, Tokens};
use crate::config::{ClusterState, Config, GRPC_OVERHEAD_BYTES};
use crate::error::ServerError;
use crate::grpc::lease::{expire_leases, LeaseService};
use crate::grpc::{
    cluster::ClusterService, kv::KvService, maintenance::MaintenanceService, watch::WatchService,
};
use crate::identity::{self, Identity, IdentityError};
use crate::lease::Lessor;
use crate::listen::{bind_all, serve, serve_metrics, url_hosts};
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, MAX_PEER_MESSAGE};
use crate::raft::node::RaftNode;
use crate::raft::peer::PeerService;
use crate::raft::state_machine::StateMachine;
use crate::raft::{PeerNode, Raft};
use crate::watch::WatchHub;
use rkv_proto::etcdserverpb::{lease_server::LeaseServer, watch_server::WatchServer, ResponseHeader};
use rkv_proto::rkvpb::peer_server::PeerServer;

/// What every service of a member shares.
pub struct MemberState {
    pub config: Config,
    pub identity: Identity,
    pub store: Arc<Store>,
    pub applier: Arc<Applier>,
    pub node: Arc<RaftNode>,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    pub metrics: Arc<Metrics>,
    /// The database size, refreshed at most every `DB_SIZE_REFRESH` (reading RocksDB's
    /// properties on every write would put that work on the write path).
    db_size: DbSizeCache,
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
    #[error(transparent)]
    Takeover(#[from] crate::etcd_files::takeover::TakeoverError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start: {0}")]
    Thread(std::io::Error),
    #[error("cannot start raft: {0}")]
    Raft(String),
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("failed to create a JWT token provider: {0}")]
    Jwt(#[from] crate::auth::jwt::JwtError),
}

/// A started member. Dropping it without `stop` leaves its tasks running until the runtime ends.
pub struct Member {
    client_addrs: Vec<SocketAddr>,
    stop_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    state: Arc<MemberState>,
    /// Lets `stop` wait until the store is closed and the data dir can be opened again.
    store_ref: std::sync::Weak<Store>,
}

impl Member {
    /// Opens the data dir and the store, starts raft, binds the peer and client URLs and
    /// starts serving.
    pub async fn start(config: Config) -> Result<Member, StartError> {
        let token = &config.initial_cluster_token;
        let member_id = identity::compute_member_id(&config.initial_advertise_peer_urls, token);
        let initial: std::collections::BTreeMap<u64, PeerNode> = config
            .initial_cluster
            .iter()
            .map(|(name, urls)| {
                (
                    identity::compute_member_id(urls, token),
                    PeerNode { name: name.clone(), peer_urls: urls.clone() },
                )
            })
            .collect();
        let ids: Vec<u64> = initial.keys().copied().collect();
        let peer_fixtures = config.data_dir.join("fixtures").join("peer");
        let peer_hosts = url_hosts(&config.initial_advertise_peer_urls);
        let peer_tls = if config.peer_tls.configured() || config.peer_tls.trusted_ca.is_some() {
            Some(crate::tls::peer_client_config(
                &config.peer_tls,
                &config.tls_cipher_suites,
                &peer_fixtures,
                &peer_hosts,
            )?)
        } else {
            None
        };
        // A stopped etcd member's data dir: like etcd on its own data dir, --initial-cluster-state
        // no longer matters; the member continues its own one-member cluster.
        let taking_over = crate::etcd_files::takeover::is_etcd_data_dir(&config.data_dir);
        let fresh = if config.initial_cluster_state == ClusterState::Existing
            && !identity::is_initialized(&config.data_dir)
            && !taking_over
        {
            join_identity(&config, &peer_tls).await?
        } else {
            Identity { member_id, cluster_id: identity::compute_cluster_id(&ids) }
        };
        if taking_over {
            let (dir, cost) = (config.data_dir.clone(), config.bcrypt_cost);
            tokio::task::spawn_blocking(move || crate::etcd_files::takeover::take_over(&dir, fresh, cost))
                .await
                .map_err(|e| StartError::Thread(std::io::Error::other(e.to_string())))??;
        }
        let identity = identity::open_data_dir(&config.data_dir, fresh)?;
        let db_path = identity::db_path(&config.data_dir);
        let store = Arc::new(
            tokio::task::spawn_blocking(move || Store::open(db_path))
                .await
                .map_err(|e| StartError::Thread(std::io::Error::other(e.to_string())))??,
        );
        let header = ResponseHeader {
            cluster_id: identity.cluster_id,
            member_id: identity.member_id,
            revision: 0,
            raft_term: crate::raft::node::etcd_term(store.applied_index()?.term),
        };
        let hub = WatchHub::new(store.clone(), header, config.max_request_bytes)?;
        let lessor = Arc::new(Lessor::restore(store.leases()?, store.leased_keys()?));
        let metrics = Arc::new(Metrics::new(config.metrics)?);
        let tokens = match &config.auth_token {
            crate::config::AuthToken::Simple => Tokens::Simple(SimpleTokens::new(config.auth_token_ttl)),
            crate::config::AuthToken::Jwt(opts) => Tokens::Jwt(Box::new(JwtTokens::new(opts)?)),
        };
        let auth = Arc::new(AuthStore::new(&store, config.bcrypt_cost, tokens));
        let applier =
            Arc::new(Applier::new(store.clone(), hub.clone(), lessor.clone(), metrics.clone(), auth.clone()));
        let network =
            Network { self_id: identity.member_id, metrics: metrics.clone(), tls: peer_tls.clone() };
        let raft = start_raft(&config, &identity, &store, &applier, &hub, &lessor, network).await?;
        if !raft.is_initialized().await.map_err(|e| StartError::Raft(e.to_string()))? {
            if config.initial_cluster_state == ClusterState::New || taking_over {
                info!(members = initial.len(), "bootstrapping a new cluster");
                raft.initialize(initial).await.map_err(|e| StartError::Raft(e.to_string()))?;
            } else {
                info!("joining an existing cluster; waiting for its leader");
            }
        }
        // A lone voter need not wait an election timeout for itself (etcd's tick advance).
        let voters: Vec<u64> = raft.metrics().borrow().membership_config.membership().voter_ids().collect();
        if voters == [identity.member_id] {
            let _ = raft.trigger().elect().await;
        }
        let node = Arc::new(RaftNode::new(
            raft,
            identity.member_id,
            config.election_timeout,
            metrics.clone(),
            peer_tls,
        ));
        let store_ref = Arc::downgrade(&store);
        for flag in &config.ignored {
            warn!(flag = %flag, "etcd flag accepted but not used by rkv");
        }

        let peer_acceptor = if config.listen_peer_tls_addrs.is_empty() {
            None
        } else {
            Some(crate::tls::acceptor(
                &config.peer_tls,
                config.tls_versions,
                &config.tls_cipher_suites,
                &peer_fixtures,
                &peer_hosts,
            )?)
        };
        let client_acceptor = if config.listen_client_tls_addrs.is_empty() {
            None
        } else {
            let fixtures = config.data_dir.join("fixtures").join("client");
            let hosts = url_hosts(&config.listen_client_urls);
            Some(crate::tls::acceptor(
                &config.client_tls,
                config.tls_versions,
                &config.tls_cipher_suites,
                &fixtures,
                &hosts,
            )?)
        };
        let peer_listeners =
            bind_all(&config.listen_peer_addrs, &config.listen_peer_tls_addrs, &peer_acceptor).await?;
        let listeners =
            bind_all(&config.listen_client_addrs, &config.listen_client_tls_addrs, &client_acceptor).await?;
        let client_addrs: Vec<SocketAddr> =
            listeners.iter().filter_map(|(l, _)| l.local_addr().ok()).collect();
        let mut metrics_listeners = Vec::new();
        for addr in &config.listen_metrics_addrs {
            let listener =
                TcpListener::bind(addr).await.map_err(|source| StartError::Listen { addr: *addr, source })?;
            metrics_listeners.push(listener);
        }

        let db_size = DbSizeCache::default();
        let state =
            Arc::new(MemberState { config, identity, store, applier, node, hub, lessor, metrics, db_size });
        let (stop_tx, stop_rx) = watch::channel(false);
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
        for (listener, tls) in peer_listeners {
            let serving = serve(listener, tls, peer_routes.clone(), stop_rx.clone(), "peer", None);
            tasks.push(tokio::spawn(serving));
        }
        // Like etcd, serve clients only once this member's attributes are in the cluster's log
        // (which also means the cluster has a leader).
        publish(&state).await;
        let routes = routes(&state);
        let streams = Some(state.config.max_concurrent_streams);
        for (listener, tls) in listeners {
            let serving = serve(listener, tls, routes.clone(), stop_rx.clone(), "client", streams);
            tasks.push(tokio::spawn(serving));
        }
        for listener in metrics_listeners {
            tasks.push(tokio::spawn(serve_metrics(listener, state.clone(), stop_rx.clone())));
        }
        tasks.push(tokio::spawn(expire_leases(state.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(crate::compactor::run(
            state.clone(),
            state.config.auto_compaction,
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(follow_leadership(state.clone(), stop_rx.clone())));
        info!(
            name = %state.config.name,
            member_id = %format!("{:x}", state.identity.member_id),
            cluster_id = %format!("{:x}", state.identity.cluster_id),
            urls = ?state.config.advertise_client_urls,
            "ready to serve client requests"
        );
        Ok(Member { client_addrs, stop_tx, tasks, state, store_ref })
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
        if let Err(e) = self.state.node.raft.shutdown().await {
            warn!(error = %e, "raft did not stop cleanly");
        }
        drop(self.state);
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

/// A member joining a running cluster learns its ID (given by `member add`) and the cluster's
/// ID from the members in --initial-cluster, by its peer URLs (etcd's
/// `GetClusterFromRemotePeers`).
async fn join_identity(config: &Config, tls: &crate::raft::network::PeerTls) -> Result<Identity, StartError> {
    let mine = &config.initial_advertise_peer_urls;
    for (name, urls) in &config.initial_cluster {
        if name == &config.name {
            continue;
        }
        let node = PeerNode { name: name.clone(), peer_urls: urls.clone() };
        let Ok(mut client) = crate::raft::network::peer_client(&node, tls) else { continue };
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            client.members(rkv_proto::rkvpb::RaftMessage::default()),
        )
        .await;
        let Ok(Ok(reply)) = asked else {
            warn!(peer = %node, "cannot get the cluster's members from this peer");
            continue;
        };
        let decoded: Result<(u64, Vec<(u64, PeerNode)>), _> =
            crate::raft::codec::from_bytes(&reply.into_inner().payload);
        let Ok((cluster_id, members)) = decoded else { continue };
        for (id, member) in members {
            if crate::config::same_urls(&member.peer_urls, mine) {
                info!(member_id = %format!("{id:x}"), cluster_id = %format!("{cluster_id:x}"), "joining");
                return Ok(Identity { member_id: id, cluster_id });
            }
        }
        return Err(StartError::Raft(format!(
            "cannot join: no member of the cluster has peer URLs {} (add it with `member add` first)",
            mine.join(",")
        )));
    }
    Err(StartError::Raft("cannot join: no member of --initial-cluster answered".into()))
}

/// Starts this member's raft over the store (log, vote and state machine in one RocksDB).
async fn start_raft(
    config: &Config,
    identity: &Identity,
    store: &Arc<Store>,
    applier: &Arc<Applier>,
    hub: &Arc<WatchHub>,
    lessor: &Arc<Lessor>,
    network: Network,
) -> Result<Raft, StartError> {
    let election_ms = config.election_timeout.as_millis() as u64;
    let raft_config = openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: config.heartbeat_interval.as_millis() as u64,
        // openraft waits out a leader lease (election_timeout_max) before its randomized
        // election timeout; halving both gives etcd's failover time, an election within one
        // to two --election-timeout of silence, and a one-timeout lease for MoveLeader to wait.
        election_timeout_min: (election_ms / 2).max(config.heartbeat_interval.as_millis() as u64 + 1),
        election_timeout_max: election_ms,
        install_snapshot_timeout: election_ms.max(1000),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        // etcd keeps this many entries behind a snapshot for slow followers to catch up from.
        max_in_snapshot_log_to_keep: config.snapshot_catchup_entries,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let on_install = {
        let (store, lessor, hub, applier) = (store.clone(), lessor.clone(), hub.clone(), applier.clone());
        Arc::new(move || match (store.leases(), store.leased_keys(), store.current_revision()) {
            (Ok(leases), Ok(keys), Ok(rev)) => {
                applier.reload_alarms();
                applier.auth.reload(&store);
                lessor.reset(leases, keys);
                hub.resync_all(rev);
            }
            _ => error!("cannot reload leases after a snapshot"),
        }) as Arc<dyn Fn() + Send + Sync>
    };
    let snap_dir = config.data_dir.join("snap");
    let state_machine =
        StateMachine::new(applier.clone(), snap_dir, on_install).map_err(StartError::Thread)?;
    let log_store = LogStore::new(store.clone(), network.metrics.clone());
    Raft::new(identity.member_id, Arc::new(raft_config), network, log_store, state_machine)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))
}

/// Follows elections: the term on watch responses, lease deadlines renewed when this member
/// becomes the leader (etcd's `Promote`), and the leader changes metric.
async fn follow_leadership(state: Arc<MemberState>, mut stop: watch::Receiver<bool>) {
    let mut metrics = state.node.raft.metrics();
    let mut was_leader = false;
    let mut last_leader = None;
    loop {
        let (term, leader, current) = {
            let m = metrics.borrow_and_update();
            let leader = m.state == openraft::ServerState::Leader;
            (crate::raft::node::etcd_term(m.current_term), leader, m.current_leader)
        };
        // etcd counts a change each time a leader is known and differs from the last one.
        if current.is_some() && current != last_leader {
            state.metrics.leader_changes.inc();
            last_leader = current;
        }
        state.hub.set_term(term);
        if leader && !was_leader {
            info!(term, "became the leader; lease deadlines renewed");
            state.lessor.promote();
        }
        was_leader = leader;
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// Publishes this member's name and client URLs through the log (etcd's `publish`), retrying
/// until the cluster has a leader to take it.
async fn publish(state: &MemberState) {
    let attrs = rkv_proto::rkvpb::MemberAttributes {
        member_id: state.identity.member_id,
        name: state.config.name.clone(),
        client_urls: state.config.advertise_client_urls.clone(),
    };
    let key = crate::apply::member_key(attrs.member_id);
    let current = state.store.cluster_get(&key).ok().flatten();
    if current.as_deref() == Some(prost::Message::encode_to_vec(&attrs).as_slice()) {
        return;
    }
    loop {
        match state.node.propose(Command::Publish(attrs.clone())).await {
            Ok(_) => {
                info!("published this member's name and client URLs");
                return;
            }
            Err(e) => warn!(error = %e, "cannot publish member attributes yet"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

impl MemberState {
    /// Raises this member's NOSPACE alarm through the log unless it is already active.
    pub async fn raise_nospace(&self) {
        use rkv_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmType};
        let id = self.identity.member_id;
        let nospace = AlarmType::Nospace as i32;
        if self.applier.alarms().iter().any(|a| a.member_id == id && a.alarm == nospace) {
            return;
        }
        let raise = AlarmRequest { action: AlarmAction::Activate as i32, member_id: id, alarm: nospace };
        if let Err(e) = self.node.propose(Command::Alarm(raise)).await {
            warn!(error = %e, "cannot raise the NOSPACE alarm");
        }
    }

    /// The cluster's members as etcd lists them, sorted by ID: peer URLs from the raft
    /// membership, name and client URLs as each member published them.
    pub fn members(&self) -> Result<Vec<rkv_proto::etcdserverpb::Member>, ServerError> {
        let published: std::collections::HashMap<u64, rkv_proto::rkvpb::MemberAttributes> = self
            .store
            .cluster_scan(CLUSTER_MEMBER_PREFIX)?
            .into_iter()
            .filter_map(|(_, v)| prost::Message::decode(v.as_slice()).ok())
            .map(|a: rkv_proto::rkvpb::MemberAttributes| (a.member_id, a))
            .collect();
        let metrics = self.node.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let mut members: Vec<_> = membership
            .nodes()
            .map(|(id, node)| {
                let attrs = published.get(id);
                rkv_proto::etcdserverpb::Member {
                    id: *id,
                    name: attrs.map(|a| a.name.clone()).unwrap_or_else(|| node.name.clone()),
                    peer_ur_ls: node.peer_urls.clone(),
                    client_ur_ls: attrs.map(|a| a.client_urls.clone()).unwrap_or_default(),
                    is_learner: !voters.contains(id),
                }
            })
            .collect();
        members.sort_by_key(|m| m.id);
        Ok(members)
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
        .add_service(
            rkv_proto::etcdserverpb::auth_server::AuthServer::new(crate::grpc::auth::AuthService::new(
                state.clone(),
            ))
            .max_decoding_message_size(max_decode),
        )
        .add_service(health_service);
    let mut routes = builder.routes();
    let grpc = std::mem::take(routes.axum_router_mut());
    *routes.axum_router_mut() =
        grpc.merge(crate::http::router(state.clone())).layer(GrpcMetricsLayer::new(state.metrics.clone()));
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
