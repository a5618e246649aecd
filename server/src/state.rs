//! `MemberState`: what every service of a running member shares (configuration, identity,
//! store, apply layer, raft node, watch hub, lessor, metrics), and the questions about the
//! member that more than one service asks.

use std::sync::Arc;
use std::time::Duration;

use rkv_storage::Store;
use tracing::warn;

use crate::apply::{Applier, Command, CLUSTER_MEMBER_PREFIX};
use crate::config::Config;
use crate::error::ServerError;
use crate::identity::Identity;
use crate::lease::Lessor;
use crate::metrics::{MemberGauges, Metrics};
use crate::raft::node::RaftNode;
use crate::watch::WatchHub;

/// The member's state as its services hold it.
pub type Shared = Arc<MemberState>;

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
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        identity: Identity,
        store: Arc<Store>,
        applier: Arc<Applier>,
        node: Arc<RaftNode>,
        hub: Arc<WatchHub>,
        lessor: Arc<Lessor>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let db_size = DbSizeCache::default();
        MemberState { config, identity, store, applier, node, hub, lessor, metrics, db_size }
    }

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
        let mut published = std::collections::HashMap::new();
        for (k, v) in self.store.cluster_scan(CLUSTER_MEMBER_PREFIX)? {
            let attrs: rkv_proto::rkvpb::MemberAttributes =
                prost::Message::decode(v.as_slice()).map_err(|_| {
                    rkv_storage::StorageError::Corrupt(format!(
                        "member attributes {}",
                        String::from_utf8_lossy(&k)
                    ))
                })?;
            published.insert(attrs.member_id, attrs);
        }
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

    /// Prometheus' text for /metrics, with the gauges that mirror this member's state.
    pub fn scrape_metrics(&self) -> String {
        let m = self.node.raft.metrics().borrow().clone();
        let me = self.identity.member_id;
        let counts = self.hub.counts();
        let gauges = MemberGauges {
            member_id: me,
            leader: m.current_leader,
            learner: !m.membership_config.membership().voter_ids().any(|id| id == me),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            quota_backend_bytes: self.config.quota_backend_bytes,
            db_size: logged(self.store.db_size(), "database size"),
            keys: logged(self.store.live_keys(), "number of keys").map(|k| k as u64),
            current_revision: logged(self.store.current_revision(), "current revision"),
            compact_revision: logged(self.store.compacted_revision(), "compacted revision"),
            watch_streams: counts.streams,
            watchers: counts.watchers,
            unsynced_watchers: counts.unsynced,
        };
        self.metrics.scrape(&gauges)
    }
}

/// A figure for a gauge; a store that cannot answer leaves the gauge as it was, which is
/// safe for a gauge that is read again at the next scrape, and is logged.
fn logged<T>(read: Result<T, rkv_storage::StorageError>, what: &str) -> Option<T> {
    read.map_err(|e| warn!(error = %e, "cannot read the {what} for /metrics")).ok()
}
