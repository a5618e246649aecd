//! A load generator for any etcd-compatible endpoint (like etcd's `benchmark` tool) and the
//! deployments it drives: rkv or a real etcd 3.5, 1 or 3 members, started with the same flags.
//! Shared by `benches/compare.rs` (the full run, rkv beside etcd) and `tests/bench_smoke.rs`
//! (every workload, tiny, in CI).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rkv_proto::etcdserverpb::{
    compare, kv_client::KvClient, request_op, watch_client::WatchClient, watch_request::RequestUnion,
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use tonic::transport::{Channel, Endpoint};

/// Which server a deployment runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rkv,
    Etcd,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rkv => "rkv",
            Kind::Etcd => "etcd",
        }
    }

    fn program(self) -> PathBuf {
        match self {
            Kind::Rkv => PathBuf::from(env!("CARGO_BIN_EXE_rkv")),
            Kind::Etcd => PathBuf::from("etcd"),
        }
    }
}

#[path = "../../tests/common/mod.rs"]
mod common;
use common::{free_port, rss_kib};

struct Member {
    child: Option<Child>,
    args: Vec<String>,
    client_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
}

/// 1 or 3 members of one kind on this machine, started with etcd's flags (rkv takes the
/// same), each logging to a file in `dir`.
pub struct Deployment {
    pub kind: Kind,
    members: Vec<Member>,
    program: PathBuf,
}

impl Deployment {
    pub fn start(kind: Kind, dir: &Path, n: usize) -> Deployment {
        let peers: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let initial: Vec<String> =
            peers.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}")).collect();
        let members = peers
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let data_dir = dir.join(format!("{}-m{i}", kind.name()));
                let args = vec![
                    format!("--name=m{i}"),
                    format!("--data-dir={}", data_dir.display()),
                    format!("--listen-client-urls=http://127.0.0.1:{client}"),
                    format!("--advertise-client-urls=http://127.0.0.1:{client}"),
                    format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
                    format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
                    format!("--initial-cluster={}", initial.join(",")),
                    "--initial-cluster-token=bench".to_string(),
                    "--log-level=error".to_string(),
                ];
                let log = dir.join(format!("{}-m{i}.log", kind.name()));
                Member { child: None, args, client_port: *client, data_dir, log }
            })
            .collect();
        let mut d = Deployment { kind, members, program: kind.program() };
        d.launch_all();
        d
    }

    fn launch_all(&mut self) {
        for m in &mut self.members {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&m.log)
                .unwrap_or_else(|e| panic!("log: {e}"));
            let child = Command::new(&self.program)
                .args(&m.args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", self.program.display()));
            m.child = Some(child);
        }
    }

    /// Waits until a linearizable read succeeds on every member.
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        for m in &self.members {
            loop {
                if let Ok(ch) = connect(m.client_port).await {
                    let get = RangeRequest { key: b"/ready".to_vec(), ..Default::default() };
                    if KvClient::new(ch).range(get).await.is_ok() {
                        break;
                    }
                }
                let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                assert!(Instant::now() < deadline, "{} not ready:\n{log}", self.kind.name());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// One channel per member.
    pub async fn channels(&self) -> Vec<Channel> {
        let mut out = Vec::new();
        for m in &self.members {
            out.push(connect(m.client_port).await.unwrap_or_else(|e| panic!("connect: {e}")));
        }
        out
    }

    /// kill -9 of every member, then a start: the time until a linearizable read succeeds on
    /// every member.
    pub async fn restart_time(&mut self) -> Duration {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let started = Instant::now();
        self.launch_all();
        self.wait_ready().await;
        started.elapsed()
    }

    /// The largest resident set of the members, in bytes.
    pub fn max_rss(&self) -> u64 {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref())
            .map(|c| rss_kib(c.id()) * 1024)
            .max()
            .unwrap_or(0)
    }

    /// Bytes under the first member's data dir.
    pub fn data_size(&self) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(entries) = std::fs::read_dir(p) else { return 0 };
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        self.members.first().map_or(0, |m| walk(&m.data_dir))
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

async fn connect(port: u16) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// What one workload measured.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Sorted per-operation latencies.
    pub latencies: Vec<Duration>,
}

impl Stats {
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[i]
    }

    fn merge(parts: Vec<(u64, u64, Vec<Duration>)>, elapsed: Duration) -> Stats {
        let mut s = Stats { elapsed, ..Default::default() };
        for (ops, errors, lat) in parts {
            s.ops += ops;
            s.errors += errors;
            s.latencies.extend(lat);
        }
        s.latencies.sort_unstable();
        s
    }
}

/// The workloads of issue 8, each a self-contained run against fresh keys.
#[derive(Clone, Copy, Debug)]
pub enum Workload {
    /// Puts of 256-byte values from `clients` concurrent clients, random or sequential keys.
    Put { clients: usize, sequential: bool },
    /// Single-key ranges from 64 clients.
    Range { clients: usize, serializable: bool },
    /// kube-apiserver's GuaranteedUpdate: txn(compare mod_revision, put, else get).
    GuaranteedUpdate { clients: usize },
    /// `watchers` watchers of one prefix while `writers` clients put into it.
    WatchFanout { watchers: usize, writers: usize },
    /// LIST-like prefix ranges over `keys` keys, `limit` 0 for all.
    List { keys: usize, limit: i64 },
}

impl Workload {
    pub fn name(&self) -> String {
        match self {
            Workload::Put { clients, sequential } => {
                format!("put {clients} clients, {} keys", if *sequential { "sequential" } else { "random" })
            }
            Workload::Range { clients, serializable } => format!(
                "range 1 key, {} clients, {}",
                clients,
                if *serializable { "serializable" } else { "linearizable" }
            ),
            Workload::GuaranteedUpdate { clients } => format!("GuaranteedUpdate txn, {clients} clients"),
            Workload::WatchFanout { watchers, writers } => {
                format!("watch {watchers} watchers, {writers} writers")
            }
            Workload::List { keys, limit } => match limit {
                0 => format!("list {keys} keys"),
                l => format!("list {keys} keys, limit {l}"),
            },
        }
    }

    /// The full set, for `ops` operations per workload (list and watch scale it down).
    pub fn all() -> Vec<Workload> {
        let mut w = Vec::new();
        for clients in [1, 16, 64, 256] {
            w.push(Workload::Put { clients, sequential: false });
        }
        w.push(Workload::Put { clients: 64, sequential: true });
        w.push(Workload::Range { clients: 64, serializable: false });
        w.push(Workload::Range { clients: 64, serializable: true });
        w.push(Workload::GuaranteedUpdate { clients: 64 });
        w.push(Workload::WatchFanout { watchers: 100, writers: 1 });
        w.push(Workload::WatchFanout { watchers: 100, writers: 16 });
        for keys in [1000, 10_000] {
            w.push(Workload::List { keys, limit: 0 });
            w.push(Workload::List { keys, limit: 500 });
        }
        w
    }

    pub async fn run(&self, channels: &[Channel], ops: usize, tag: &str) -> Stats {
        match *self {
            Workload::Put { clients, sequential } => put(channels, clients, ops, sequential, tag).await,
            Workload::Range { clients, serializable } => {
                range(channels, clients, ops, serializable, tag).await
            }
            Workload::GuaranteedUpdate { clients } => guaranteed_update(channels, clients, ops, tag).await,
            Workload::WatchFanout { watchers, writers } => {
                watch_fanout(channels, watchers, writers, (ops / 10).max(10), tag).await
            }
            Workload::List { keys, limit } => {
                let ops = if keys >= 10_000 && limit == 0 { ops / 100 } else { ops / 10 };
                list(channels, keys, limit, ops.max(5), tag).await
            }
        }
    }
}

fn value(len: usize) -> Vec<u8> {
    vec![b'v'; len]
}

/// Runs `clients` tasks, each doing its share of `ops` with `op(client, i)`; client c talks
/// to member c % members.
async fn drive<F, Fut>(channels: &[Channel], clients: usize, ops: usize, op: F) -> Stats
where
    F: Fn(KvClient<Channel>, usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let kv = KvClient::new(channels[c % channels.len()].clone()).max_decoding_message_size(64 << 20);
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut errors, mut lat) = (0u64, 0u64, Vec::new());
            for i in (c..ops).step_by(clients) {
                let t = Instant::now();
                if op(kv.clone(), c, i).await {
                    done += 1;
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (done, errors, lat)
        }));
    }
    let mut parts = Vec::new();
    for t in tasks {
        parts.push(t.await.unwrap_or_else(|e| panic!("{e}")));
    }
    Stats::merge(parts, started.elapsed())
}

async fn put(channels: &[Channel], clients: usize, ops: usize, sequential: bool, tag: &str) -> Stats {
    let prefix = format!("/put/{tag}/");
    drive(channels, clients, ops, move |mut kv, _, i| {
        let key = if sequential {
            format!("{prefix}{i:010}")
        } else {
            format!("{prefix}{:016x}", rand::random::<u64>())
        };
        async move {
            kv.put(PutRequest { key: key.into_bytes(), value: value(256), ..Default::default() })
                .await
                .is_ok()
        }
    })
    .await
}

async fn preload(channels: &[Channel], prefix: &str, keys: usize) {
    let prefix = prefix.to_string();
    let loaded = drive(channels, 64, keys, move |mut kv, _, i| {
        let key = format!("{prefix}{i:08}");
        async move {
            kv.put(PutRequest { key: key.into_bytes(), value: value(256), ..Default::default() })
                .await
                .is_ok()
        }
    })
    .await;
    assert_eq!(loaded.errors, 0, "preloading {keys} keys failed");
}

async fn range(channels: &[Channel], clients: usize, ops: usize, serializable: bool, tag: &str) -> Stats {
    let key = format!("/range/{tag}");
    preload(channels, &key, 1).await;
    let key = format!("{key}00000000");
    // Serializable reads on a follower may trail the write just made (etcd's semantics too):
    // a linearizable read on every member first waits until each has applied it.
    for ch in channels {
        let r = RangeRequest { key: key.clone().into_bytes(), ..Default::default() };
        let seen = KvClient::new(ch.clone()).range(r).await.map(|r| r.into_inner().kvs.len());
        assert_eq!(seen.ok(), Some(1), "the preloaded key is not readable");
    }
    drive(channels, clients, ops, move |mut kv, _, _| {
        let r = RangeRequest { key: key.clone().into_bytes(), serializable, ..Default::default() };
        async move { kv.range(r).await.is_ok_and(|r| r.into_inner().kvs.len() == 1) }
    })
    .await
}

/// Each client updates its own keys (a thousand objects shared by clients round-robin) the
/// way kube-apiserver does: it remembers the mod_revision it last saw and writes with a txn
/// guarded by it; a conflict answers the current object, which the retry uses.
async fn guaranteed_update(channels: &[Channel], clients: usize, ops: usize, tag: &str) -> Stats {
    let prefix = format!("/gu/{tag}/");
    let objects = 1000.min(ops.max(1));
    preload(channels, &prefix, objects).await;
    let known: Arc<Vec<std::sync::atomic::AtomicI64>> =
        Arc::new((0..objects).map(|_| std::sync::atomic::AtomicI64::new(0)).collect());
    drive(channels, clients, ops, move |mut kv, _, i| {
        let key = format!("{prefix}{:08}", i % objects).into_bytes();
        let known = known.clone();
        async move {
            let slot = &known[i % objects];
            for _ in 0..5 {
                let rev = slot.load(std::sync::atomic::Ordering::Relaxed);
                let txn = TxnRequest {
                    compare: vec![Compare {
                        result: compare::CompareResult::Equal as i32,
                        target: compare::CompareTarget::Mod as i32,
                        key: key.clone(),
                        target_union: Some(compare::TargetUnion::ModRevision(rev)),
                        range_end: vec![],
                    }],
                    success: vec![RequestOp {
                        request: Some(request_op::Request::RequestPut(PutRequest {
                            key: key.clone(),
                            value: value(256),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![RequestOp {
                        request: Some(request_op::Request::RequestRange(RangeRequest {
                            key: key.clone(),
                            ..Default::default()
                        })),
                    }],
                };
                let Ok(resp) = kv.txn(txn).await else { return false };
                let resp = resp.into_inner();
                let new = match (resp.succeeded, resp.responses.first().and_then(|r| r.response.as_ref())) {
                    (true, _) => resp.header.map_or(0, |h| h.revision),
                    (false, Some(rkv_proto::etcdserverpb::response_op::Response::ResponseRange(r))) => {
                        r.kvs.first().map_or(0, |kv| kv.mod_revision)
                    }
                    _ => return false,
                };
                slot.store(new, std::sync::atomic::Ordering::Relaxed);
                if resp.succeeded {
                    return true;
                }
            }
            false
        }
    })
    .await
}

fn now_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Events/s delivered to all watchers, and put→event latency (the put's send time travels in
/// its value).
async fn watch_fanout(
    channels: &[Channel],
    watchers: usize,
    writers: usize,
    puts: usize,
    tag: &str,
) -> Stats {
    let prefix = format!("/watch/{tag}/").into_bytes();
    let mut end = prefix.clone();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut listeners = Vec::new();
    for w in 0..watchers {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let create = WatchCreateRequest { key: prefix.clone(), range_end: end.clone(), ..Default::default() };
        let _ = tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) }).await;
        let mut stream = WatchClient::new(channels[w % channels.len()].clone())
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .unwrap_or_else(|e| panic!("watch: {e}"))
            .into_inner();
        let created = stream.message().await.unwrap_or_else(|e| panic!("watch: {e}"));
        assert!(created.is_some_and(|w| w.created), "watch not created");
        listeners.push(tokio::spawn(async move {
            let _keep = tx;
            let mut lat = Vec::with_capacity(puts);
            while lat.len() < puts {
                match tokio::time::timeout(Duration::from_secs(60), stream.message()).await {
                    Ok(Ok(Some(resp))) => {
                        for ev in resp.events {
                            let sent = ev
                                .kv
                                .as_ref()
                                .and_then(|kv| kv.value.get(..8))
                                .map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap_or([0; 8])));
                            lat.push(Duration::from_nanos(now_nanos().saturating_sub(sent)));
                        }
                    }
                    _ => break,
                }
            }
            lat
        }));
    }
    let started = Instant::now();
    let prefix_s = String::from_utf8_lossy(&prefix).into_owned();
    let written =
        drive(channels, writers, puts, move |mut kv, _, i| {
            let mut v = now_nanos().to_be_bytes().to_vec();
            v.resize(256, b'v');
            let key = format!("{prefix_s}{i:08}");
            async move {
                kv.put(PutRequest { key: key.into_bytes(), value: v, ..Default::default() }).await.is_ok()
            }
        })
        .await;
    let mut parts = Vec::new();
    for l in listeners {
        let lat = l.await.unwrap_or_else(|e| panic!("{e}"));
        let missing = (puts - lat.len().min(puts)) as u64;
        parts.push((lat.len() as u64, missing, lat));
    }
    let mut stats = Stats::merge(parts, started.elapsed());
    stats.errors += written.errors;
    stats
}

async fn list(channels: &[Channel], keys: usize, limit: i64, ops: usize, tag: &str) -> Stats {
    let prefix = format!("/list/{tag}/");
    preload(channels, &prefix, keys).await;
    let mut end = prefix.clone().into_bytes();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let want = if limit > 0 { (limit as usize).min(keys) } else { keys };
    drive(channels, 16, ops, move |mut kv, _, _| {
        let r = RangeRequest {
            key: prefix.clone().into_bytes(),
            range_end: end.clone(),
            limit,
            ..Default::default()
        };
        async move { kv.range(r).await.is_ok_and(|r| r.into_inner().kvs.len() == want) }
    })
    .await
}

/// RSS and data size after `keys` keys of 256 bytes, then the restart time.
pub struct Footprint {
    pub rss: u64,
    pub data: u64,
    pub restart: Duration,
}

pub async fn footprint(d: &mut Deployment, keys: usize) -> Footprint {
    let channels = d.channels().await;
    preload(&channels, "/footprint/", keys).await;
    let rss = d.max_rss();
    let data = d.data_size();
    let restart = d.restart_time().await;
    Footprint { rss, data, restart }
}
