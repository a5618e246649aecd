//! Concurrent writes share log entries (the leader batches them): each still gets its own
//! revision and its own answer, and each is checked against its own proposer's permissions.

mod common;

use rkv_proto::etcdserverpb::{
    auth_client::AuthClient, kv_client::KvClient, maintenance_client::MaintenanceClient, AuthenticateRequest,
    PutRequest, RangeRequest, StatusRequest,
};
use tonic::transport::Channel;

use common::{channel, etcdctl, tempdir, Rkv};

async fn put_as(ch: Channel, token: Option<String>, key: String) -> Result<i64, String> {
    let mut req =
        tonic::Request::new(PutRequest { key: key.into_bytes(), value: b"v".to_vec(), ..Default::default() });
    if let Some(t) = token {
        req.metadata_mut().insert("token", t.parse().unwrap_or_else(|e| panic!("{e:?}")));
    }
    KvClient::new(ch)
        .put(req)
        .await
        .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
        .map_err(|s| s.message().to_string())
}

/// The index of the last entry in the member's raft log (Maintenance Status' raftIndex).
async fn raft_index(ch: Channel) -> u64 {
    MaintenanceClient::new(ch)
        .status(StatusRequest {})
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .raft_index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_share_entries_and_each_get_their_own_revision() {
    const PUTS: i64 = 200;
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let ch = channel(&rkv).await;
    let first_index = raft_index(ch.clone()).await;
    let writes: Vec<_> =
        (0..PUTS).map(|i| tokio::spawn(put_as(ch.clone(), None, format!("/k/{i:03}")))).collect();
    let mut revisions = Vec::new();
    for (i, w) in writes.into_iter().enumerate() {
        revisions.push(w.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("put {i}: {e}")));
    }
    // Without batching each put is an entry of its own (and anything else the member
    // proposes meanwhile only adds entries): fewer entries than puts means puts shared one.
    let entries = raft_index(ch.clone()).await - first_index;
    assert!(entries < PUTS as u64, "{PUTS} concurrent puts took {entries} raft log entries: none shared one");
    for (i, rev) in revisions.iter().enumerate() {
        let got = KvClient::new(ch.clone())
            .range(RangeRequest { key: format!("/k/{i:03}").into_bytes(), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        assert_eq!(got.kvs.first().map(|kv| kv.mod_revision), Some(*rev), "key {i}");
    }
    revisions.sort_unstable();
    assert_eq!(
        revisions,
        (2..PUTS + 2).collect::<Vec<i64>>(),
        "one revision per put, none shared or skipped"
    );
    eprintln!("{PUTS} concurrent puts in {entries} raft log entries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_write_in_a_batch_is_checked_as_its_proposer() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "alice:apw"],
        &["user", "add", "bob:bpw"],
        &["role", "add", "a-writer"],
        &["role", "grant-permission", "a-writer", "readwrite", "/a/", "--prefix"],
        &["user", "grant-role", "alice", "a-writer"],
        &["auth", "enable"],
    ] {
        let run = etcdctl(&rkv, &[&["--user=root:rootpw"][..], args].concat(), None);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
    let ch = channel(&rkv).await;
    let token = |name: &str, password: &str| {
        let (ch, name, password) = (ch.clone(), name.to_string(), password.to_string());
        async move {
            AuthClient::new(ch)
                .authenticate(AuthenticateRequest { name, password })
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .into_inner()
                .token
        }
    };
    let (alice, bob) = (token("alice", "apw").await, token("bob", "bpw").await);
    let writes: Vec<_> = (0..100)
        .map(|i| {
            let who = if i % 2 == 0 { alice.clone() } else { bob.clone() };
            tokio::spawn(put_as(ch.clone(), Some(who), format!("/a/{i:03}")))
        })
        .collect();
    for (i, w) in writes.into_iter().enumerate() {
        let got = w.await.unwrap_or_else(|e| panic!("{e}"));
        if i % 2 == 0 {
            assert!(got.is_ok(), "alice's put {i}: {got:?}");
        } else {
            assert_eq!(got, Err("etcdserver: permission denied".to_string()), "bob's put {i}");
        }
    }
    let listed = etcdctl(&rkv, &["--user=root:rootpw", "get", "/a/", "--prefix", "--keys-only"], None);
    let keys: Vec<&str> = listed.stdout.lines().filter(|l| !l.is_empty()).collect();
    let want: Vec<String> = (0..100).step_by(2).map(|i| format!("/a/{i:03}")).collect();
    assert_eq!(keys, want);
}

/// Linearizable reads that arrive together share ReadIndex rounds; a read must still see
/// every write acknowledged before it started, on a follower, while other reads keep rounds
/// busy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_read_rounds_still_see_every_acknowledged_write() {
    let dir = tempdir();
    let cluster = common::cluster::Cluster::start(dir.path(), 3);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let (writer, reader) =
        (channel(&cluster.members[leader]).await, channel(&cluster.members[follower]).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy: Vec<_> = (0..16)
        .map(|_| {
            let (reader, stop) = (reader.clone(), stop.clone());
            tokio::spawn(async move {
                let mut kv = KvClient::new(reader);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = kv.range(RangeRequest { key: b"other".to_vec(), ..Default::default() }).await;
                }
            })
        })
        .collect();
    for i in 0..100 {
        let value = format!("{i}");
        let put =
            PutRequest { key: b"seen".to_vec(), value: value.clone().into_bytes(), ..Default::default() };
        KvClient::new(writer.clone()).put(put).await.unwrap_or_else(|e| panic!("put {i}: {e}"));
        let got = KvClient::new(reader.clone())
            .range(RangeRequest { key: b"seen".to_vec(), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("read {i}: {e}"))
            .into_inner();
        assert_eq!(
            got.kvs.first().map(|kv| kv.value.clone()),
            Some(value.into_bytes()),
            "read after put {i}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.await.unwrap_or_else(|e| panic!("{e}"));
    }
}
