//! Prometheus `/metrics`: etcd's metric names, types and buckets (compared with a real etcd
//! 3.5 scraped after the same operations), values that move with the load, and the
//! `--listen-metrics-urls` listener.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{etcdctl, free_port, http_get, tempdir, Etcd, Rkv, Server};

/// One scrape: each family's type, and every sample as (name, labels, value).
struct Scrape {
    types: BTreeMap<String, String>,
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut types = BTreeMap::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("bad TYPE line {line:?}"));
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample {line:?}"));
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.trim_end_matches('}')),
                    None => (series, ""),
                };
                let value = value.parse().unwrap_or_else(|e| panic!("bad value in {line:?}: {e}"));
                samples.push((name.to_string(), labels.to_string(), value));
            }
        }
        Scrape { types, samples }
    }

    /// The sum of `name`'s samples whose labels contain every one of `with`.
    fn value(&self, name: &str, with: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && with.iter().all(|w| l.contains(w)))
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }

    /// A histogram's bucket bounds (of its first series).
    fn buckets(&self, family: &str) -> Vec<String> {
        let bucket = format!("{family}_bucket");
        let first = self.samples.iter().find(|(n, _, _)| *n == bucket).map(|(_, l, _)| without_le(l));
        self.samples
            .iter()
            .filter(|(n, l, _)| *n == bucket && Some(without_le(l)) == first)
            .filter_map(|(_, l, _)| {
                l.split(',').find_map(|kv| kv.strip_prefix("le=")).map(|v| v.trim_matches('"').to_string())
            })
            .collect()
    }
}

fn without_le(labels: &str) -> String {
    labels.split(',').filter(|kv| !kv.starts_with("le=")).collect::<Vec<_>>().join(",")
}

fn scrape(server: &impl Server) -> Scrape {
    let answer = http_get(server, "/metrics");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Scrape::parse(&dechunk(body));
    }
    Scrape::parse(body)
}

/// An HTTP/1.1 chunked body (Go's server sends /metrics so): size line, data, CRLF, ... 0.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap_or_else(|| panic!("bad chunk in {body:?}"));
        let size =
            usize::from_str_radix(size.trim(), 16).unwrap_or_else(|e| panic!("chunk size {size:?}: {e}"));
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

/// The metrics etcd's dashboards and alerts use, all of which rkv must export.
const REQUIRED: &[&str] = &[
    "etcd_server_has_leader",
    "etcd_server_is_leader",
    "etcd_server_leader_changes_seen_total",
    "etcd_server_proposals_committed_total",
    "etcd_server_proposals_applied_total",
    "etcd_server_proposals_pending",
    "etcd_server_proposals_failed_total",
    "etcd_server_id",
    "etcd_server_version",
    "etcd_server_quota_backend_bytes",
    "etcd_mvcc_db_total_size_in_bytes",
    "etcd_mvcc_db_total_size_in_use_in_bytes",
    "etcd_disk_wal_fsync_duration_seconds_count",
    "etcd_disk_backend_commit_duration_seconds_count",
    "etcd_debugging_mvcc_keys_total",
    "etcd_mvcc_put_total",
    "etcd_mvcc_range_total",
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "process_resident_memory_bytes",
];

#[test]
fn names_types_and_buckets_are_etcds() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    for server in [etcd.as_dyn(), rkv.as_dyn()] {
        for i in 0..5 {
            assert_eq!(etcdctl(server, &["put", &format!("k{i}"), "v"], None).code, 0);
        }
        assert_eq!(etcdctl(server, &["get", "k", "--prefix"], None).code, 0);
        assert_eq!(etcdctl(server, &["del", "k0"], None).code, 0);
        assert_ne!(etcdctl(server, &["get", "k", "--rev=1000"], None).code, 0);
    }
    let (theirs, ours) = (scrape(&etcd), scrape(&rkv));
    for name in REQUIRED {
        assert!(ours.has(name), "rkv does not export {name}");
    }
    let mut compared = 0;
    for (family, kind) in &ours.types {
        // rkv's own, and the Rust process collector's thread count (Go's has none).
        if family.starts_with("rkv_") || family == "process_threads" {
            continue;
        }
        let Some(etcd_kind) = theirs.types.get(family) else {
            panic!("rkv exports {family}, which etcd 3.5 does not");
        };
        assert_eq!(kind, etcd_kind, "type of {family}");
        if kind == "histogram" && theirs.has(&format!("{family}_bucket")) {
            assert_eq!(ours.buckets(family), theirs.buckets(family), "buckets of {family}");
        }
        compared += 1;
    }
    assert!(compared >= REQUIRED.len(), "{compared} families compared");
    // The same operations counted the same way.
    for (name, labels) in [
        ("grpc_server_handled_total", &["grpc_method=\"Put\"", "grpc_code=\"OK\""][..]),
        ("grpc_server_handled_total", &["grpc_method=\"Range\"", "grpc_code=\"OutOfRange\""][..]),
        ("grpc_server_started_total", &["grpc_method=\"DeleteRange\"", "grpc_type=\"unary\""][..]),
        ("etcd_mvcc_put_total", &[][..]),
        ("etcd_mvcc_delete_total", &[][..]),
        ("etcd_debugging_mvcc_keys_total", &[][..]),
        ("etcd_debugging_mvcc_current_revision", &[][..]),
        ("etcd_server_has_leader", &[][..]),
        ("etcd_server_is_leader", &[][..]),
        ("etcd_server_leader_changes_seen_total", &[][..]),
    ] {
        assert_eq!(ours.value(name, labels), theirs.value(name, labels), "{name}{labels:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn values_move_with_the_load_and_the_metrics_url_serves_them() {
    let dir = tempdir();
    let metrics_port = free_port();
    let rkv = Rkv::start_with(
        dir.path(),
        &[&format!("--listen-metrics-urls=http://127.0.0.1:{metrics_port}"), "--metrics=extensive"],
    );
    struct MetricsUrl(u16);
    impl Server for MetricsUrl {
        fn endpoint(&self) -> String {
            format!("127.0.0.1:{}", self.0)
        }
    }
    let metrics_url = MetricsUrl(metrics_port);
    let before = scrape(&metrics_url);
    assert_eq!(before.value("etcd_server_has_leader", &[]), 1.0);
    assert_eq!(before.value("etcd_server_proposals_pending", &[]), 0.0);

    let mut client =
        etcd_client::Client::connect([rkv.endpoint()], None).await.unwrap_or_else(|e| panic!("{e}"));
    let (_watcher, mut events) = client.watch("w", None).await.unwrap_or_else(|e| panic!("{e}"));
    const PUTS: usize = 50;
    for i in 0..PUTS {
        client.put(format!("w/{i}"), vec![7u8; 256], None).await.unwrap_or_else(|e| panic!("{e}"));
    }
    client.put("w", "last", None).await.unwrap_or_else(|e| panic!("{e}"));
    let got = tokio::time::timeout(Duration::from_secs(10), events.message()).await;
    assert!(matches!(got, Ok(Ok(Some(_)))), "{got:?}");

    // Gauges are read at scrape time; the watch delivery is recorded as the response leaves.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let s = scrape(&metrics_url);
        if s.value("rkv_watch_delivery_duration_seconds_count", &[]) >= 1.0 {
            break s;
        }
        assert!(Instant::now() < deadline, "no watch delivery recorded within 10 s of the event arriving");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let grew = |name: &str, by: f64| {
        let (b, a) = (before.value(name, &[]), after.value(name, &[]));
        assert!(a - b >= by, "{name}: {b} -> {a}, expected +{by}");
    };
    let n = (PUTS + 1) as f64;
    grew("etcd_server_proposals_committed_total", n);
    grew("etcd_server_proposals_applied_total", n);
    grew("etcd_disk_wal_fsync_duration_seconds_count", 1.0);
    grew("etcd_disk_backend_commit_duration_seconds_count", 1.0);
    grew("etcd_mvcc_put_total", n);
    grew("etcd_debugging_mvcc_keys_total", n);
    grew("etcd_debugging_mvcc_current_revision", n);
    grew("rkv_watch_delivery_duration_seconds_count", 1.0);
    assert!(after.value("etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    assert!(after.value("etcd_mvcc_db_total_size_in_use_in_bytes", &[]) > 0.0);
    assert_eq!(after.value("etcd_debugging_mvcc_watcher_total", &[]), 1.0);
    assert_eq!(after.value("etcd_debugging_mvcc_watch_stream_total", &[]), 1.0);
    let put_ok = ["grpc_method=\"Put\"", "grpc_code=\"OK\""];
    assert_eq!(
        after.value("grpc_server_handled_total", &put_ok)
            - before.value("grpc_server_handled_total", &put_ok),
        n
    );
    // --metrics=extensive adds gRPC handling time.
    assert_eq!(after.value("grpc_server_handling_seconds_count", &["grpc_method=\"Put\""]), n);
    // The metrics URL serves /health too, and nothing of the client API.
    assert!(http_get(&metrics_url, "/health").contains(r#""health":"true""#));
    assert!(http_get(&metrics_url, "/version").starts_with("HTTP/1.1 404"));
}

#[tokio::test(flavor = "multi_thread")]
async fn peer_round_trips_and_leader_changes_in_a_cluster() {
    let dir = tempdir();
    let mut cluster = Cluster::start(dir.path(), 3);
    let old = cluster.leader().await;
    let first = scrape(&cluster.members[old]);
    assert_eq!(first.value("etcd_server_is_leader", &[]), 1.0);
    // Heartbeats measure the round trip to each follower.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = scrape(&cluster.members[old]);
        let peers = s
            .samples
            .iter()
            .filter(|(n, _, v)| n == "etcd_network_peer_round_trip_time_seconds_count" && *v > 0.0)
            .count();
        if peers == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "round trips to {peers} of 2 peers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.members[old].kill9();
    let new = cluster.leader().await;
    let s = scrape(&cluster.members[new]);
    assert_eq!(s.value("etcd_server_is_leader", &[]), 1.0);
    assert_eq!(s.value("etcd_server_has_leader", &[]), 1.0);
    assert!(s.value("etcd_server_leader_changes_seen_total", &[]) >= 2.0);
    let follower = (0..3).find(|i| *i != old && *i != new).unwrap_or_else(|| panic!("no follower"));
    let f = scrape(&cluster.members[follower]);
    assert_eq!(f.value("etcd_server_is_leader", &[]), 0.0);
    assert!(f.value("etcd_server_leader_changes_seen_total", &[]) >= 2.0);
}
