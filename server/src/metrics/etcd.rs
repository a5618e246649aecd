//! etcd's metrics by subsystem, with etcd's names, help texts and buckets.

use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

use super::{buckets, counter, counter_vec, gauge, gauge_vec, histogram, histogram_vec, Built};

/// etcd_server_*: leadership, proposals, identity, quota and leases.
pub struct ServerMetrics {
    pub(super) has_leader: IntGauge,
    pub(super) is_leader: IntGauge,
    pub(super) is_learner: IntGauge,
    pub leader_changes: IntCounter,
    /// Set by the log store as openraft saves the commit point.
    pub proposals_committed: IntGauge,
    pub(super) proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    pub(super) server_id: IntGaugeVec,
    pub(super) quota_backend_bytes: IntGauge,
    pub lease_expired: IntCounter,
}

impl ServerMetrics {
    pub(super) fn new(r: &Registry) -> Built<Self> {
        Ok(Self {
            has_leader: gauge(
                r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            )?,
            is_leader: gauge(
                r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            )?,
            is_learner: gauge(
                r,
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            )?,
            leader_changes: counter(
                r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            )?,
            proposals_committed: gauge(
                r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            )?,
            proposals_applied: gauge(
                r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            )?,
            proposals_pending: gauge(
                r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            )?,
            proposals_failed: counter(
                r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            )?,
            server_id: gauge_vec(
                r,
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                &["server_id"],
            )?,
            quota_backend_bytes: gauge(
                r,
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            )?,
            lease_expired: counter(
                r,
                "etcd_debugging_server_lease_expired_total",
                "The total number of expired leases.",
            )?,
        })
    }
}

/// etcd_disk_*: the log's fsyncs and the backend's commits.
pub struct DiskMetrics {
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
}

impl DiskMetrics {
    pub(super) fn new(r: &Registry) -> Built<Self> {
        Ok(Self {
            wal_fsync: histogram(
                r,
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                buckets(0.001, 14)?,
            )?,
            backend_commit: histogram(
                r,
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                buckets(0.001, 14)?,
            )?,
        })
    }
}

/// etcd_network_*: the peer links.
pub struct NetworkMetrics {
    pub peer_rtt: HistogramVec,
    pub peer_sent_bytes: IntCounterVec,
    pub peer_sent_failures: IntCounterVec,
}

impl NetworkMetrics {
    pub(super) fn new(r: &Registry) -> Built<Self> {
        Ok(Self {
            peer_rtt: histogram_vec(
                r,
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
                &["To"],
                buckets(0.0001, 16)?,
            )?,
            peer_sent_bytes: counter_vec(
                r,
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                &["To"],
            )?,
            peer_sent_failures: counter_vec(
                r,
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                &["To"],
            )?,
        })
    }
}

/// etcd_mvcc_* and etcd_debugging_mvcc_*: the store and its watchers.
pub struct MvccMetrics {
    pub(super) db_total_size: IntGauge,
    pub(super) db_total_size_in_use: IntGauge,
    pub(super) keys_total: IntGauge,
    pub(super) current_revision: IntGauge,
    pub(super) compact_revision: IntGauge,
    pub put_total: IntCounter,
    pub delete_total: IntCounter,
    pub txn_total: IntCounter,
    pub range_total: IntCounter,
    pub(super) watcher_total: IntGauge,
    pub(super) watch_stream_total: IntGauge,
    pub(super) slow_watcher_total: IntGauge,
}

impl MvccMetrics {
    pub(super) fn new(r: &Registry) -> Built<Self> {
        Ok(Self {
            db_total_size: gauge(
                r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            )?,
            db_total_size_in_use: gauge(
                r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            )?,
            keys_total: gauge(r, "etcd_debugging_mvcc_keys_total", "Total number of keys.")?,
            current_revision: gauge(
                r,
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            )?,
            compact_revision: gauge(
                r,
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            )?,
            put_total: counter(r, "etcd_mvcc_put_total", "Total number of puts seen by this member.")?,
            delete_total: counter(
                r,
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            )?,
            txn_total: counter(r, "etcd_mvcc_txn_total", "Total number of txns seen by this member.")?,
            range_total: counter(r, "etcd_mvcc_range_total", "Total number of ranges seen by this member.")?,
            watcher_total: gauge(r, "etcd_debugging_mvcc_watcher_total", "Total number of watchers.")?,
            watch_stream_total: gauge(
                r,
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            )?,
            slow_watcher_total: gauge(
                r,
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
            )?,
        })
    }
}
