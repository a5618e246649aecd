//! Prometheus metrics with etcd's names, types, labels and buckets, so that dashboards and
//! alerts written for etcd (etcd-mixin, kube-prometheus) work on rkv unchanged.
//!
//! Each member has its own registry (several members can run in one process through the embed
//! API). Counters and histograms are updated where the work happens; gauges that mirror state
//! (leader, indexes, db size, key count) are read when `/metrics` is scraped.

mod etcd;
pub mod grpc;

use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::version::{ETCD_API_VERSION, ETCD_CLUSTER_VERSION};

pub use crate::config::MetricsLevel;
pub use etcd::{DiskMetrics, MvccMetrics, NetworkMetrics, ServerMetrics};

pub struct Metrics {
    registry: Registry,
    pub server: ServerMetrics,
    pub disk: DiskMetrics,
    pub network: NetworkMetrics,
    pub mvcc: MvccMetrics,
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
            server: ServerMetrics::new(&r)?,
            disk: DiskMetrics::new(&r)?,
            network: NetworkMetrics::new(&r)?,
            mvcc: MvccMetrics::new(&r)?,
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
        self.server.has_leader.set(g.leader.is_some() as i64);
        self.server.is_leader.set((g.leader == Some(g.member_id)) as i64);
        self.server.is_learner.set(g.learner as i64);
        self.server.proposals_applied.set(g.applied_index as i64);
        self.server.server_id.with_label_values(&[format!("{:x}", g.member_id).as_str()]).set(1);
        self.server.quota_backend_bytes.set(g.quota_backend_bytes as i64);
        // A store figure that could not be read keeps its last value (and was logged).
        if let Some((total, in_use)) = g.db_size {
            self.mvcc.db_total_size.set(total as i64);
            self.mvcc.db_total_size_in_use.set(in_use as i64);
        }
        if let Some(keys) = g.keys {
            self.mvcc.keys_total.set(keys as i64);
        }
        if let Some(rev) = g.current_revision {
            self.mvcc.current_revision.set(rev);
        }
        if let Some(rev) = g.compact_revision {
            self.mvcc.compact_revision.set(rev);
        }
        self.mvcc.watch_stream_total.set(g.watch_streams as i64);
        self.mvcc.watcher_total.set(g.watchers as i64);
        self.mvcc.slow_watcher_total.set(g.unsynced_watchers as i64);

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
