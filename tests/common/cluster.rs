//! Clusters of real rkv processes on loopback: members m0..mN-1 bootstrapped together from
//! one --initial-cluster, killed, stopped (SIGSTOP) and restarted one by one or all at once.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rkv_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use rkv_proto::etcdserverpb::{kv_client::KvClient, HashKvRequest, PutRequest, RangeRequest, StatusRequest};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::{assert_acknowledged_writes_present, channel, free_port, Acked, Rkv, Server};

pub struct Cluster {
    pub members: Vec<Rkv>,
    /// Each member's name and peer URL, in `members` order.
    pub peers: Vec<(String, String)>,
}

impl Cluster {
    pub fn start(dir: &Path, n: usize) -> Cluster {
        Cluster::start_with(dir, n, &[])
    }

    /// A cluster whose members all get `extra` flags.
    pub fn start_with(dir: &Path, n: usize, extra: &[&str]) -> Cluster {
        Cluster::start_on(dir, n, "http", extra)
    }

    /// A cluster whose peer URLs have `scheme` ("https" for peer TLS).
    pub fn start_on(dir: &Path, n: usize, scheme: &str, extra: &[&str]) -> Cluster {
        let peers: Vec<String> = (0..n).map(|_| format!("{scheme}://127.0.0.1:{}", free_port())).collect();
        let initial: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("m{i}={p}")).collect();
        let initial = format!("--initial-cluster={}", initial.join(","));
        let members: Vec<Rkv> = peers
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                let member_dir = dir.join(format!("m{i}"));
                std::fs::create_dir_all(&member_dir).unwrap_or_else(|e| panic!("{e}"));
                let mut args = vec![
                    format!("--name=m{i}"),
                    initial.clone(),
                    format!("--initial-advertise-peer-urls={peer}"),
                    format!("--listen-peer-urls={peer}"),
                    "--initial-cluster-token=rkv-test".to_string(),
                ];
                args.extend(extra.iter().map(|s| s.to_string()));
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Rkv::new(&member_dir, &args)
            })
            .collect();
        let peers = peers.iter().enumerate().map(|(i, p)| (format!("m{i}"), p.clone())).collect();
        let mut cluster = Cluster { members, peers };
        cluster.start_all();
        cluster
    }

    /// Launches every member that is not running, then waits until each is ready: members
    /// of a cluster become ready together, once they have elected a leader.
    pub fn start_all(&mut self) {
        let offsets: Vec<Option<u64>> = self
            .members
            .iter_mut()
            .map(|m| if m.child.is_none() { Some(m.launch()) } else { None })
            .collect();
        for (m, offset) in self.members.iter_mut().zip(offsets) {
            if let Some(offset) = offset {
                m.wait_ready(offset);
            }
        }
    }

    /// A new member `name` (not started) that joins the running cluster with
    /// --initial-cluster-state existing, once `member add` has added its peer URL.
    pub fn joiner(&mut self, dir: &Path, name: &str, extra: &[&str]) -> (usize, String) {
        let peer = format!("http://127.0.0.1:{}", free_port());
        self.peers.push((name.to_string(), peer.clone()));
        let initial: Vec<String> = self.peers.iter().map(|(n, p)| format!("{n}={p}")).collect();
        let member_dir = dir.join(name);
        std::fs::create_dir_all(&member_dir).unwrap_or_else(|e| panic!("{e}"));
        let mut args = vec![
            format!("--name={name}"),
            format!("--initial-cluster={}", initial.join(",")),
            "--initial-cluster-state=existing".to_string(),
            format!("--initial-advertise-peer-urls={peer}"),
            format!("--listen-peer-urls={peer}"),
            "--initial-cluster-token=rkv-test".to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.members.push(Rkv::new(&member_dir, &args));
        (self.members.len() - 1, peer)
    }

    pub fn endpoints(&self) -> String {
        self.members.iter().map(|m| m.endpoint()).collect::<Vec<_>>().join(",")
    }

    /// The index of the member the running members agree is the leader, waiting for one.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut seen = Vec::new();
            for m in self.members.iter().filter(|m| m.child.is_some()) {
                if let Some((member, leader)) = status(m).await {
                    seen.push((member, leader));
                }
            }
            let leaders: Vec<u64> = seen.iter().map(|(_, l)| *l).collect();
            if let Some(&leader) = leaders.first() {
                if leader != 0 && leaders.iter().all(|l| *l == leader) {
                    for (i, m) in self.members.iter().enumerate() {
                        if m.child.is_some() {
                            if let Some((id, _)) = status(m).await {
                                if id == leader {
                                    return i;
                                }
                            }
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOP / SIGCONT a member: it keeps its connections but answers nothing.
    pub fn pause(&self, i: usize, paused: bool) {
        let child = self.members[i].child.as_ref().unwrap_or_else(|| panic!("m{i} is not running"));
        let signal = if paused { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").arg(signal).arg(child.id().to_string()).status();
        assert!(ok.is_ok_and(|s| s.success()), "kill {signal} m{i}");
    }
}

/// (member id, leader id) from a member's Status, None when it does not answer in time.
pub async fn status(m: &Rkv) -> Option<(u64, u64)> {
    let channel = tonic::transport::Endpoint::from_shared(m.url())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .ok()?;
    let status = MaintenanceClient::new(channel).status(StatusRequest {}).await.ok()?.into_inner();
    Some((status.header?.member_id, status.leader))
}

pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

pub async fn kv(m: &Rkv) -> KvClient<Channel> {
    KvClient::new(channel(m).await)
}

/// Keys under `prefix` on `m` ("\0": every key), read linearizably (or serializably).
pub async fn keys(m: &Rkv, prefix: &str, serializable: bool) -> (BTreeSet<String>, i64) {
    let range_end = if prefix == "\0" { b"\0".to_vec() } else { prefix_end(prefix.as_bytes()) };
    let resp = kv(m)
        .await
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end,
            keys_only: true,
            serializable,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("range on {}: {e}", m.endpoint()))
        .into_inner();
    let keys = resp.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect();
    (keys, resp.header.map(|h| h.revision).unwrap_or(0))
}

/// HashKV of every running member at one revision: equal digests mean equal histories.
pub async fn assert_same_history(cluster: &Cluster) {
    let mut rev = i64::MAX;
    for m in cluster.members.iter().filter(|m| m.child.is_some()) {
        // A linearizable read brings the member up to the commit index first.
        rev = rev.min(keys(m, "\0", false).await.1);
    }
    let mut hashes = Vec::new();
    for m in cluster.members.iter().filter(|m| m.child.is_some()) {
        let resp = MaintenanceClient::new(channel(m).await)
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .unwrap_or_else(|e| panic!("hashkv on {}: {e}", m.endpoint()))
            .into_inner();
        hashes.push((m.endpoint(), resp.hash, resp.compact_revision));
    }
    assert!(hashes.windows(2).all(|w| (w[0].1, w[0].2) == (w[1].1, w[1].2)), "hashes at {rev}: {hashes:?}");
    // Maintenance.Hash over the whole store agrees too once every member has applied the same
    // log (a lease may still expire meanwhile: compare again until a quiet moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut whole = Vec::new();
        for m in cluster.members.iter().filter(|m| m.child.is_some()) {
            keys(m, "\0", false).await;
            let resp = MaintenanceClient::new(channel(m).await)
                .hash(rkv_proto::etcdserverpb::HashRequest {})
                .await
                .unwrap_or_else(|e| panic!("hash on {}: {e}", m.endpoint()))
                .into_inner();
            whole.push((resp.header.map(|h| h.revision), resp.hash));
        }
        if whole.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        assert!(Instant::now() < deadline, "hash: {whole:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writers putting unique keys through the members of a cluster, each moving on to another
/// member when one fails it, and every write they saw acknowledged.
pub struct WriteLoad {
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<Mutex<bool>>,
    writers: Vec<JoinHandle<()>>,
}

impl WriteLoad {
    /// Starts `writers` writers over the members of `cluster` (writer w starts at member w).
    pub fn start(cluster: &Cluster, writers: usize) -> WriteLoad {
        let endpoints: Vec<String> = cluster.members.iter().map(|m| m.endpoint()).collect();
        let acked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(Mutex::new(false));
        let writers = (0..writers)
            .map(|w| tokio::spawn(write_load(endpoints.clone(), w, acked.clone(), stop.clone())))
            .collect();
        WriteLoad { acked, stop, writers }
    }

    /// Waits until `more` writes beyond those acknowledged so far are acknowledged.
    pub async fn wait_for_more(&self, more: usize) {
        let at_least = self.acked.lock().unwrap_or_else(|e| e.into_inner()).len() + more;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.acked.lock().unwrap_or_else(|e| e.into_inner()).len() < at_least {
            assert!(Instant::now() < deadline, "writes stalled below {at_least}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the writers; returns every write they saw acknowledged.
    pub async fn stop(self) -> Vec<Acked> {
        *self.stop.lock().unwrap_or_else(|e| e.into_inner()) = true;
        for w in self.writers {
            let _ = w.await;
        }
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
        acked
    }
}

/// Puts unique keys through any member until told to stop; records every acknowledged key with
/// the revision of its answer.
async fn write_load(
    endpoints: Vec<String>,
    writer: usize,
    acked: Arc<Mutex<Vec<Acked>>>,
    stop: Arc<Mutex<bool>>,
) {
    let mut n = 0u64;
    let mut target = writer;
    while !*stop.lock().unwrap_or_else(|e| e.into_inner()) {
        let endpoint = &endpoints[target % endpoints.len()];
        let conn = tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
            .unwrap_or_else(|e| panic!("{e}"))
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(10));
        let Ok(channel) = conn.connect().await else {
            target += 1;
            continue;
        };
        let mut client = KvClient::new(channel);
        loop {
            if *stop.lock().unwrap_or_else(|e| e.into_inner()) {
                return;
            }
            let key = format!("load/{writer}/{n:06}");
            n += 1;
            let put =
                PutRequest { key: key.clone().into_bytes(), value: vec![b'x'; 64], ..Default::default() };
            match client.put(put).await {
                Ok(resp) => {
                    let rev = resp.into_inner().header.map_or(0, |h| h.revision);
                    acked.lock().unwrap_or_else(|e| e.into_inner()).push((key, rev));
                }
                Err(_) => {
                    // Unknown outcome: the key may or may not exist. Try another member.
                    target += 1;
                    break;
                }
            }
        }
    }
}

/// Panics unless every member of `cluster` holds every write in `acked` (see
/// `assert_acknowledged_writes_present`) and all members hold the same history.
pub async fn assert_no_acknowledged_write_lost(cluster: &Cluster, acked: &[Acked], context: &str) {
    for m in &cluster.members {
        assert_acknowledged_writes_present(m, acked, context).await;
    }
    assert_same_history(cluster).await;
}

pub async fn hash_kv(m: &Rkv, revision: i64) -> (u32, i64) {
    let resp = MaintenanceClient::new(channel(m).await)
        .hash_kv(HashKvRequest { revision })
        .await
        .unwrap_or_else(|e| panic!("hashkv on {}: {e}", m.endpoint()))
        .into_inner();
    (resp.hash, resp.compact_revision)
}
