//! Starting a member's core: its identity (a new cluster, joining a running one, or taking over
//! a stopped etcd member's data dir), the store with the layers over it, and raft.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rkv_proto::etcdserverpb::ResponseHeader;
use rkv_storage::Store;
use tracing::{info, warn};

use super::StartError;
use crate::apply::Applier;
use crate::auth::jwt::JwtTokens;
use crate::auth::{AuthStore, SimpleTokens, Tokens};
use crate::config::{AuthToken, ClusterState, Config};
use crate::etcd_files::takeover;
use crate::identity::{self, Identity};
use crate::lease::Lessor;
use crate::listen::url_hosts;
use crate::metrics::Metrics;
use crate::raft::log_store::LogStore;
use crate::raft::network::{Network, PeerTls};
use crate::raft::node::RaftNode;
use crate::raft::state_machine::{OnInstall, StateMachine};
use crate::raft::{PeerNode, Raft};
use crate::watch::WatchHub;

/// The layers over the store, below raft.
pub(super) struct Core {
    pub store: Arc<Store>,
    pub hub: Arc<WatchHub>,
    pub lessor: Arc<Lessor>,
    pub metrics: Arc<Metrics>,
    pub applier: Arc<Applier>,
}

/// The TLS configuration this member's peer clients use, if peer TLS is configured.
pub(super) fn peer_client_tls(config: &Config) -> Result<PeerTls, StartError> {
    if !(config.peer_tls.configured() || config.peer_tls.trusted_ca.is_some()) {
        return Ok(None);
    }
    Ok(Some(crate::tls::peer_client_config(
        &config.peer_tls,
        &config.tls_cipher_suites,
        &peer_fixtures(config),
        &url_hosts(&config.initial_advertise_peer_urls),
    )?))
}

/// Where `--peer-auto-tls` keeps its generated certificate.
pub(super) fn peer_fixtures(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("fixtures").join("peer")
}

/// The members of `--initial-cluster` by the member IDs etcd computes for them.
pub(super) fn initial_members(config: &Config) -> BTreeMap<u64, PeerNode> {
    let token = &config.initial_cluster_token;
    config
        .initial_cluster
        .iter()
        .map(|(name, urls)| {
            (
                identity::compute_member_id(urls, token),
                PeerNode { name: name.clone(), peer_urls: urls.clone() },
            )
        })
        .collect()
}

/// This member's identity, with its data dir ready to open: an etcd member's data dir is taken
/// over first (true in the result). Like etcd on its own data dir, --initial-cluster-state no
/// longer matters then: the member continues its own one-member cluster.
pub(super) async fn prepare_data_dir(
    config: &Config,
    peer_tls: &PeerTls,
    initial: &BTreeMap<u64, PeerNode>,
) -> Result<(Identity, bool), StartError> {
    let taking_over = takeover::is_etcd_data_dir(&config.data_dir);
    let fresh = if config.initial_cluster_state == ClusterState::Existing
        && !identity::is_initialized(&config.data_dir)
        && !taking_over
    {
        join_identity(config, peer_tls).await?
    } else {
        let member_id =
            identity::compute_member_id(&config.initial_advertise_peer_urls, &config.initial_cluster_token);
        let ids: Vec<u64> = initial.keys().copied().collect();
        Identity { member_id, cluster_id: identity::compute_cluster_id(&ids) }
    };
    if taking_over {
        let (dir, cost) = (config.data_dir.clone(), config.bcrypt_cost);
        blocking(move || takeover::take_over(&dir, fresh, cost)).await??;
    }
    Ok((identity::open_data_dir(&config.data_dir, fresh)?, taking_over))
}

/// Runs blocking start-up work (opening RocksDB, reading etcd's files) off the runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, StartError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StartError::Thread(std::io::Error::other(e.to_string())))
}

/// Opens the store and builds the layers over it: watch hub, lessor, metrics, auth, applier.
pub(super) async fn open_core(config: &Config, identity: &Identity) -> Result<Core, StartError> {
    let db_path = identity::db_path(&config.data_dir);
    let store = Arc::new(blocking(move || Store::open(db_path)).await??);
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
        AuthToken::Simple => Tokens::Simple(SimpleTokens::new(config.auth_token_ttl)),
        AuthToken::Jwt(opts) => Tokens::Jwt(Box::new(JwtTokens::new(opts)?)),
    };
    let auth = Arc::new(AuthStore::new(&store, config.bcrypt_cost, tokens)?);
    let applier =
        Arc::new(Applier::new(store.clone(), hub.clone(), lessor.clone(), metrics.clone(), auth.clone())?);
    Ok(Core { store, hub, lessor, metrics, applier })
}

/// Starts raft over the core, bootstraps a new cluster (or the one taken over from etcd) and
/// returns the node that proposes and reads through it.
pub(super) async fn start_node(
    config: &Config,
    identity: &Identity,
    core: &Core,
    peer_tls: PeerTls,
    initial: BTreeMap<u64, PeerNode>,
    taking_over: bool,
) -> Result<Arc<RaftNode>, StartError> {
    let network =
        Network { self_id: identity.member_id, metrics: core.metrics.clone(), tls: peer_tls.clone() };
    let raft = start_raft(config, identity, core, network).await?;
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
        if let Err(e) = raft.trigger().elect().await {
            // Only a shortcut: the election timeout elects this member anyway.
            info!(error = %e, "cannot campaign at once; waiting for the election timeout");
        }
    }
    Ok(Arc::new(RaftNode::new(
        raft,
        identity.member_id,
        config.election_timeout,
        core.metrics.clone(),
        peer_tls,
    )))
}

/// A member joining a running cluster learns its ID (given by `member add`) and the cluster's
/// ID from the members in --initial-cluster, by its peer URLs (etcd's
/// `GetClusterFromRemotePeers`).
async fn join_identity(config: &Config, tls: &PeerTls) -> Result<Identity, StartError> {
    let mine = &config.initial_advertise_peer_urls;
    for (name, urls) in &config.initial_cluster {
        if name == &config.name {
            continue;
        }
        let node = PeerNode { name: name.clone(), peer_urls: urls.clone() };
        // Any peer that answers will do: one that cannot is logged and the next one asked.
        let mut client = match crate::raft::network::peer_client(&node, tls) {
            Ok(client) => client,
            Err(e) => {
                warn!(peer = %node, error = %e, "cannot reach this peer");
                continue;
            }
        };
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
        let (cluster_id, members) = match decoded {
            Ok(answer) => answer,
            Err(e) => {
                warn!(peer = %node, error = %e, "cannot decode the cluster's members from this peer");
                continue;
            }
        };
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
    core: &Core,
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
        let (store, lessor, hub, applier) =
            (core.store.clone(), core.lessor.clone(), core.hub.clone(), core.applier.clone());
        Arc::new(move || {
            let (leases, keys, rev) = (store.leases()?, store.leased_keys()?, store.current_revision()?);
            applier.reload_alarms()?;
            applier.auth.reload(&store)?;
            lessor.reset(leases, keys);
            hub.resync_all(rev);
            Ok(())
        }) as OnInstall
    };
    let snap_dir = config.data_dir.join("snap");
    let state_machine =
        StateMachine::new(core.applier.clone(), snap_dir, on_install).map_err(StartError::Thread)?;
    let log_store = LogStore::new(core.store.clone(), network.metrics.clone());
    Raft::new(identity.member_id, Arc::new(raft_config), network, log_store, state_machine)
        .await
        .map_err(|e| StartError::Raft(e.to_string()))
}
