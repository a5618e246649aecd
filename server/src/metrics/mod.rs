//! Prometheus metrics with etcd's names, types, labels and buckets, so that dashboards and
//! alerts written for etcd (etcd-mixin, kube-prometheus) work on rkv unchanged.
//!
//! Each member has its own registry (several members can run in one process through the embed
//! API). Counters and histograms are updated where the work happens; gauges that mirror state
//! (leader, indexes, db size, key count) are read when `/metrics` is scraped.

pub mod grpc;

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::version::{ETCD_API_VERSION, ETCD_CLUSTER_VERSION};

pub use crate::config::MetricsLevel;

pub struct Metrics {
    registry: Registry,
    has_leader: IntGauge,
    is_leader: IntGauge,
    is_learner: IntGauge,
    pub leader_changes: IntCounter,
    /// Set by the log store as openraft saves the commit point.
    pub proposals_committed: IntGauge,
    proposals_applied: IntGauge,
    pub proposals_pending: IntGauge,
    pub proposals_failed: IntCounter,
    server_id: IntGaugeVec,
    quota_backend_bytes: IntGauge,
    pub lease_expired: IntCounter,

    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,

    pub peer_rtt: HistogramVec,
    pub peer_sent_bytes: IntCounterVec,
    pub peer_sent_failures: IntCounterVec,

    db_total_size: IntGauge,
    db_total_size_in_use: IntGauge,
    keys_total: IntGauge,
    current_revision: IntGauge,
    compact_revision: IntGauge,
    pub put_total: IntCounter,
    pub delete_total: IntCounter,
    pub txn_total: IntCounter,
    pub range_total: IntCounter,
    watcher_total: IntGauge,
    watch_stream_total: IntGauge,
    slow_watcher_total: IntGauge,

    /// rkv's own: from a batch being durable to its watch response leaving for the client.
    pub watch_delivery: Histogram,

    pub grpc: grpc::GrpcMetrics,
}

type Built<M> = Result<M, prometheus::Error>;

fn counter(registry: &Registry, name: &str, help: &str) -> Built<IntCounter> {
    register(registry, IntCounter::new(name, help)?)
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Built<IntGauge> {
    register(registry, IntGauge::new(name, help)?)
}

pub(crate) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Built<IntCounterVec> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Built<IntGaugeVec> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// etcd's histograms use Go's `prometheus.ExponentialBuckets(start, 2, count)`.
fn buckets(start: f64, count: usize) -> Built<Vec<f64>> {
    exponential_buckets(start, 2.0, count)
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Built<Histogram> {
    register(registry, Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?)
}

pub(crate) fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> Built<HistogramVec> {
    register(registry, HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?)
}

fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: M) -> Built<M> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

impl Metrics {
    /// Fails only on a bad metric definition (names are constants: a bug, caught by tests).
    pub fn new(level: MetricsLevel) -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        if let Err(e) = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
            tracing::warn!(error = %e, "no process metrics");
        }
        let version = gauge_vec(
            &r,
            "etcd_server_version",
            "Which version is running. 1 for 'server_version' label with current version.",
            &["server_version"],
        )?;
        version.with_label_values(&[ETCD_API_VERSION]).set(1);
        let cluster_version = gauge_vec(
            &r,
            "etcd_cluster_version",
            "Which version is running. 1 for 'cluster_version' label with current cluster version",
            &["cluster_version"],
        )?;
        let major_minor: String =
            ETCD_CLUSTER_VERSION.rsplit_once('.').map(|(v, _)| v.to_string()).unwrap_or_default();
        cluster_version.with_label_values(&[major_minor.as_str()]).set(1);
        Ok(Metrics {
            has_leader: gauge(
                &r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            )?,
            is_leader: gauge(
                &r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            )?,
            is_learner: gauge(
                &r,
                "etcd_server_is_learner",
                "Whether or not this member is a learner. 1 if is, 0 otherwise.",
            )?,
            leader_changes: counter(
                &r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            )?,
            proposals_committed: gauge(
                &r,
                "etcd_server_proposals_committed_total",
                "The total number of consensus proposals committed.",
            )?,
            proposals_applied: gauge(
                &r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            )?,
            proposals_pending: gauge(
                &r,
                "etcd_server_proposals_pending",
                "The current number of pending proposals to commit.",
            )?,
            proposals_failed: counter(
                &r,
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen.",
            )?,
            server_id: gauge_vec(
                &r,
                "etcd_server_id",
                "Server or member ID in hexadecimal format. 1 for 'server_id' label with current ID.",
                &["server_id"],
            )?,
            quota_backend_bytes: gauge(
                &r,
                "etcd_server_quota_backend_bytes",
                "Current backend storage quota size in bytes.",
            )?,
            lease_expired: counter(
                &r,
                "etcd_debugging_server_lease_expired_total",
                "The total number of expired leases.",
            )?,
            wal_fsync: histogram(
                &r,
                "etcd_disk_wal_fsync_duration_seconds",
                "The latency distributions of fsync called by WAL.",
                buckets(0.001, 14)?,
            )?,
            backend_commit: histogram(
                &r,
                "etcd_disk_backend_commit_duration_seconds",
                "The latency distributions of commit called by backend.",
                buckets(0.001, 14)?,
            )?,
            peer_rtt: histogram_vec(
                &r,
                "etcd_network_peer_round_trip_time_seconds",
                "Round-Trip-Time histogram between peers",
                &["To"],
                buckets(0.0001, 16)?,
            )?,
            peer_sent_bytes: counter_vec(
                &r,
                "etcd_network_peer_sent_bytes_total",
                "The total number of bytes sent to peers.",
                &["To"],
            )?,
            peer_sent_failures: counter_vec(
                &r,
                "etcd_network_peer_sent_failures_total",
                "The total number of send failures from peers.",
                &["To"],
            )?,
            db_total_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            )?,
            db_total_size_in_use: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_use_in_bytes",
                "Total size of the underlying database logically in use in bytes.",
            )?,
            keys_total: gauge(&r, "etcd_debugging_mvcc_keys_total", "Total number of keys.")?,
            current_revision: gauge(
                &r,
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            )?,
            compact_revision: gauge(
                &r,
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            )?,
            put_total: counter(&r, "etcd_mvcc_put_total", "Total number of puts seen by this member.")?,
            delete_total: counter(
                &r,
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            )?,
            txn_total: counter(&r, "etcd_mvcc_txn_total", "Total number of txns seen by this member.")?,
            range_total: counter(&r, "etcd_mvcc_range_total", "Total number of ranges seen by this member.")?,
            watcher_total: gauge(&r, "etcd_debugging_mvcc_watcher_total", "Total number of watchers.")?,
            watch_stream_total: gauge(
                &r,
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            )?,
            slow_watcher_total: gauge(
                &r,
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.",
            )?,
            watch_delivery: histogram(
                &r,
                "rkv_watch_delivery_duration_seconds",
                "From a write being durable to its watch response being handed to the client's stream.",
                buckets(0.0001, 16)?,
            )?,
            grpc: grpc::GrpcMetrics::new(&r, level)?,
            registry: r,
        })
    }

    /// Sets the gauges that mirror the member's state, then encodes every metric in
    /// Prometheus' text format.
    pub fn scrape(&self, g: &MemberGauges) -> String {
        self.has_leader.set(g.leader.is_some() as i64);
        self.is_leader.set((g.leader == Some(g.member_id)) as i64);
        self.is_learner.set(g.learner as i64);
        self.proposals_applied.set(g.applied_index as i64);
        self.server_id.with_label_values(&[format!("{:x}", g.member_id).as_str()]).set(1);
        self.quota_backend_bytes.set(g.quota_backend_bytes as i64);
        // A store figure that could not be read keeps its last value (and was logged).
        if let Some((total, in_use)) = g.db_size {
            self.db_total_size.set(total as i64);
            self.db_total_size_in_use.set(in_use as i64);
        }
        if let Some(keys) = g.keys {
            self.keys_total.set(keys as i64);
        }
        if let Some(rev) = g.current_revision {
            self.current_revision.set(rev);
        }
        if let Some(rev) = g.compact_revision {
            self.compact_revision.set(rev);
        }
        self.watch_stream_total.set(g.watch_streams as i64);
        self.watcher_total.set(g.watchers as i64);
        self.slow_watcher_total.set(g.unsynced_watchers as i64);

        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The member's state that gauges mirror, read at each scrape.
#[derive(Debug, Default)]
pub struct MemberGauges {
    pub member_id: u64,
    pub leader: Option<u64>,
    pub learner: bool,
    pub applied_index: u64,
    pub quota_backend_bytes: u64,
    /// None where the store could not answer.
    pub db_size: Option<(u64, u64)>,
    pub keys: Option<u64>,
    pub current_revision: Option<i64>,
    pub compact_revision: Option<i64>,
    pub watch_streams: usize,
    pub watchers: usize,
    pub unsynced_watchers: usize,
}

/// Seconds as the histograms take them.
pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
