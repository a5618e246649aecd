//! Watch fan-out: 10,000 watchers over 100 streams (plus one stalled stream), rkv beside a real
//! etcd 3.5 in one run; events/s and put->event latency, reported as rkv/etcd ratios.
//!
//! `cargo bench --bench watch_fanout` (release build). `RKV_BENCH_PUTS` sets the number of puts
//! (default 100: 1,000,000 events delivered per server). Bounded in count and time; loopback only.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rkv_proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, PutRequest,
    WatchCreateRequest, WatchRequest,
};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;

use common::{channel, tempdir, Etcd, Rkv, Server};

const CONNECTIONS: usize = 10;
const STREAMS_PER_CONNECTION: usize = 10;
const WATCHERS_PER_STREAM: usize = 100;
const DEADLINE: Duration = Duration::from_secs(600);

struct Result {
    /// Resident memory of the server once every event was delivered (KiB).
    rss_kib: u64,
    events_per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn create(id: i64) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"/bench/".to_vec(),
            range_end: b"/bench0".to_vec(),
            watch_id: id + 1,
            ..Default::default()
        })),
    }
}

async fn run(server: &dyn Server, pid: u32, puts: usize) -> Result {
    let expected_per_stream = puts * WATCHERS_PER_STREAM;
    // Arrival time of each revision on stream 0, for put->event latency.
    let arrivals: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let (done_tx, mut done_rx) = mpsc::channel::<Instant>(CONNECTIONS * STREAMS_PER_CONNECTION);
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(CONNECTIONS * STREAMS_PER_CONNECTION);
    let mut keep = Vec::new();
    for c in 0..CONNECTIONS {
        let channel = channel(server).await;
        for s in 0..STREAMS_PER_CONNECTION {
            let (tx, rx) = mpsc::channel(WATCHERS_PER_STREAM + 1);
            for w in 0..WATCHERS_PER_STREAM {
                tx.send(create(w as i64)).await.unwrap_or_else(|e| panic!("{e}"));
            }
            let mut stream = WatchClient::new(channel.clone())
                .watch(ReceiverStream::new(rx))
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_inner();
            keep.push(tx);
            let (done_tx, ready_tx, arrivals) = (done_tx.clone(), ready_tx.clone(), arrivals.clone());
            let first = c == 0 && s == 0;
            tokio::spawn(async move {
                let mut got = 0;
                let mut created = 0;
                while got < expected_per_stream {
                    let Ok(Some(r)) = stream.message().await else { return };
                    if r.created {
                        created += 1;
                        if created == WATCHERS_PER_STREAM {
                            let _ = ready_tx.send(()).await;
                        }
                        continue;
                    }
                    if first && r.watch_id == 1 {
                        if let Some(rev) =
                            r.events.first().and_then(|e| e.kv.as_ref()).map(|kv| kv.mod_revision)
                        {
                            arrivals.lock().await.push((rev, Instant::now()));
                        }
                    }
                    got += r.events.len();
                }
                let _ = done_tx.send(Instant::now()).await;
            });
        }
    }
    // One stalled stream: 100 watchers whose client never reads.
    let (stalled_tx, stalled_rx) = mpsc::channel(WATCHERS_PER_STREAM + 1);
    for w in 0..WATCHERS_PER_STREAM {
        stalled_tx.send(create(w as i64)).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let _stalled = WatchClient::new(channel(server).await)
        .watch(ReceiverStream::new(stalled_rx))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Every watcher must exist before the first put.
    for _ in 0..CONNECTIONS * STREAMS_PER_CONNECTION {
        tokio::time::timeout(DEADLINE, ready_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("watch creation timed out"));
    }
    let mut kv = KvClient::new(channel(server).await);
    let value = vec![b'x'; 256];
    let mut sent = Vec::with_capacity(puts);
    let start = Instant::now();
    for i in 0..puts {
        let t = Instant::now();
        let r = kv
            .put(PutRequest {
                key: format!("/bench/{i}").into_bytes(),
                value: value.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        sent.push((r.into_inner().header.map_or(0, |h| h.revision), t));
    }
    let mut last = start;
    for _ in 0..CONNECTIONS * STREAMS_PER_CONNECTION {
        let t = tokio::time::timeout(DEADLINE, done_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("watchers did not get every event within {DEADLINE:?}"))
            .unwrap_or(start);
        last = last.max(t);
    }
    let elapsed = last - start;
    let total = (puts * WATCHERS_PER_STREAM * CONNECTIONS * STREAMS_PER_CONNECTION) as f64;
    let arrivals = arrivals.lock().await;
    let mut lat: Vec<Duration> = sent
        .iter()
        .filter_map(|(rev, t)| {
            arrivals.iter().find(|(r, _)| r == rev).map(|(_, a)| a.saturating_duration_since(*t))
        })
        .collect();
    lat.sort();
    let pct = |p: f64| lat.get(((lat.len() as f64 - 1.0) * p) as usize).copied().unwrap_or_default();
    Result {
        rss_kib: common::rss_kib(pid),
        events_per_sec: total / elapsed.as_secs_f64(),
        p50: pct(0.5),
        p99: pct(0.99),
    }
}

fn main() {
    let puts: usize = std::env::var("RKV_BENCH_PUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let dir = tempdir();
        let etcd = Etcd::start(dir.path());
        let e = run(&etcd, etcd.pid(), puts).await;
        drop(etcd);
        let rkv = Rkv::start(dir.path());
        let pid = rkv.child.as_ref().map_or(0, |c| c.id());
        let r = run(&rkv, pid, puts).await;
        println!(
            "watch fan-out, {} watchers on {} streams + 1 stalled stream, {puts} puts",
            CONNECTIONS * STREAMS_PER_CONNECTION * WATCHERS_PER_STREAM,
            CONNECTIONS * STREAMS_PER_CONNECTION
        );
        println!(
            "{:<8} {:>14} {:>12} {:>12} {:>10}",
            "server", "events/s", "p50 put->ev", "p99 put->ev", "RSS MiB"
        );
        for (name, x) in [("etcd", &e), ("rkv", &r)] {
            println!(
                "{name:<8} {:>14.0} {:>12?} {:>12?} {:>10}",
                x.events_per_sec,
                x.p50,
                x.p99,
                x.rss_kib / 1024
            );
        }
        println!(
            "ratio rkv/etcd: events/s {:.2}x, p50 latency {:.2}x, p99 latency {:.2}x, RSS {:.2}x",
            r.events_per_sec / e.events_per_sec,
            r.p50.as_secs_f64() / e.p50.as_secs_f64().max(1e-9),
            r.p99.as_secs_f64() / e.p99.as_secs_f64().max(1e-9),
            r.rss_kib as f64 / e.rss_kib.max(1) as f64
        );
    });
}
