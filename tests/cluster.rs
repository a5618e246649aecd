//! Replication: clusters of real rkv processes. Writes and reads on any member, watches on any
//! member, kill -9 of the leader (and of every member) under a write load with no acknowledged
//! write lost, and a minority that neither writes nor serves linearizable reads.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rkv_proto::etcdserverpb::{
    watch_create_request::FilterType, PutRequest, RangeRequest, WatchCreateRequest,
};

use common::cluster::{
    assert_no_acknowledged_write_lost, assert_same_history, hash_kv, keys, kv, prefix_end, Cluster, WriteLoad,
};
use common::watch::WatchConn;
use common::{channel, etcdctl, tempdir, Rkv, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_write_read_and_watch_on_any_member() {
    writes_reads_and_watches_on_any_member(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_write_read_and_watch_on_any_member() {
    writes_reads_and_watches_on_any_member(5).await;
}

async fn writes_reads_and_watches_on_any_member(n: usize) {
    let dir = tempdir();
    let cluster = Cluster::start(dir.path(), n);
    let mut watches = Vec::new();
    for m in &cluster.members {
        let w = WatchConn::open(m).await;
        w.create(WatchCreateRequest {
            key: b"k/".to_vec(),
            range_end: prefix_end(b"k/"),
            filters: vec![FilterType::Nodelete as i32],
            ..Default::default()
        })
        .await;
        watches.push(w);
    }
    for w in &mut watches {
        assert!(w.expect("created").await.created);
    }
    let mut clients = Vec::new();
    for m in &cluster.members {
        clients.push(kv(m).await);
    }
    let mut revisions = Vec::new();
    for i in 0..30 {
        let resp = clients[i % 3]
            .put(PutRequest {
                key: format!("k/{i:02}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("put through m{}: {e}", i % 3))
            .into_inner();
        revisions.push(resp.header.map(|h| h.revision).unwrap_or(0));
        // The member that took the write has applied it: its serializable read sees it.
        let (seen, _) = keys(&cluster.members[i % 3], "k/", true).await;
        assert!(seen.contains(&format!("k/{i:02}")), "m{} does not see its own write", i % 3);
    }
    assert!(revisions.windows(2).all(|w| w[1] == w[0] + 1), "one revision per put: {revisions:?}");
    let want: BTreeSet<String> = (0..30).map(|i| format!("k/{i:02}")).collect();
    for m in &cluster.members {
        assert_eq!(keys(m, "k/", false).await.0, want, "linearizable read on {}", m.endpoint());
    }
    for (i, w) in watches.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < 30 {
            let resp = w.expect("events").await;
            got.extend(resp.events.iter().map(|e| e.kv.as_ref().map(|kv| kv.mod_revision).unwrap_or(0)));
        }
        assert_eq!(got, revisions, "watch on m{i}");
    }
    assert_same_history(&cluster).await;

    // etcdctl with every member's endpoint sees one cluster.
    let all = cluster.endpoints();
    let list = etcdctl(&cluster.members[0], &["--endpoints", &all, "member", "list"], None);
    assert_eq!(list.code, 0, "{list:?}");
    let lines: Vec<&str> = list.stdout.lines().collect();
    assert_eq!(lines.len(), n, "{list:?}");
    for (i, m) in cluster.members.iter().enumerate() {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!(", started, m{i}, "))
                    && l.contains(&format!(", {}, false", m.url()))),
            "m{i} in {list:?}"
        );
    }
    let status =
        etcdctl(&cluster.members[0], &["--endpoints", &all, "endpoint", "status", "--cluster"], None);
    assert_eq!(status.code, 0, "{status:?}");
    let leaders = status.stdout.lines().filter(|l| l.split(", ").nth(4) == Some("true")).count();
    assert_eq!((status.stdout.lines().count(), leaders), (n, 1), "{status:?}");
    for m in &cluster.members {
        let got = etcdctl(m, &["get", "k/07", "--print-value-only"], None);
        assert_eq!(got.stdout, "v\n", "get through {}", m.endpoint());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_under_load_loses_no_acknowledged_write() {
    let cycles: usize = std::env::var("RKV_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let dir = tempdir();
    let mut cluster = Cluster::start(dir.path(), 3);
    let load = WriteLoad::start(&cluster, 4);
    for cycle in 0..cycles {
        load.wait_for_more(100).await;
        if cycle + 1 == cycles {
            // The last cycle kills every member at once.
            for m in &mut cluster.members {
                m.kill9();
            }
            cluster.start_all();
        } else {
            let leader = cluster.leader().await;
            cluster.members[leader].kill9();
            // Clients go on through the other two members under a new leader.
            load.wait_for_more(100).await;
            assert_ne!(cluster.leader().await, leader);
            cluster.start_all();
        }
    }
    load.wait_for_more(50).await;
    let acked = load.stop().await;
    assert_no_acknowledged_write_lost(&cluster, &acked, &format!("after {cycles} kill cycles")).await;
    eprintln!("{} acknowledged writes over {cycles} kill cycles, none lost", acked.len());
}

/// How much later than the server's deadline a client may see its answer: loopback round trips
/// and scheduling on a loaded 2-core machine, well under a second.
const SLACK: Duration = Duration::from_secs(1);

/// Sends `request` (a `what` to a minority) and checks that it fails as etcd's does when its
/// request timeout ends: Unavailable, "request timed out", no sooner than `request_timeout` and
/// less than SLACK later.
async fn assert_times_out_like_etcd<T: std::fmt::Debug>(
    what: &str,
    request_timeout: Duration,
    request: impl std::future::Future<Output = Result<T, tonic::Status>>,
) {
    let started = Instant::now();
    let err = match request.await {
        Ok(answer) => panic!("a minority answered a {what}: {answer:?}"),
        Err(err) => err,
    };
    let took = started.elapsed();
    assert_eq!(
        (err.code(), err.message()),
        (tonic::Code::Unavailable, "etcdserver: request timed out"),
        "{what}: {err:?}"
    );
    assert!(
        took >= request_timeout && took < request_timeout + SLACK,
        "the {what} failed after {took:?}; the request timeout is {request_timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_neither_writes_nor_reads_linearizably_then_converges() {
    // etcd's default election timeout, given explicitly: the bounds below follow from it.
    let election_timeout = Duration::from_millis(1000);
    // etcd's request timeout (its ReqTimeout, rkv's request_timeout): 5 s plus two election
    // timeouts. rkv's /health and /readyz give up after two election timeouts. A client sees each
    // answer up to SLACK later than the server's deadline.
    let request_timeout = Duration::from_secs(5) + 2 * election_timeout;
    let probe_timeout = 2 * election_timeout;
    let dir = tempdir();
    let flag = format!("--election-timeout={}", election_timeout.as_millis());
    let cluster = Cluster::start_with(dir.path(), 3, &[flag.as_str()]);
    let leader = cluster.leader().await;
    let alone = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    kv(&cluster.members[alone])
        .await
        .put(PutRequest { key: b"before".to_vec(), value: b"1".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut client = kv(&cluster.members[alone]).await;
    cluster.pause(leader, true);
    cluster.pause(other, true);
    // The lone follower still knows its leader and hands the put over; nobody answers. etcd
    // answers when its request timeout ends, with "request timed out" alone: by then the
    // follower has lost its leader (it campaigns in vain), so etcd has no leader connection to
    // blame ("possibly due to connection lost") and no newly elected leader to blame
    // ("possibly due to previous leader failure"). No leader is elected to change to, and
    // "no leader" is etcd's answer only to requests that ask for a leader (WithRequireLeader).
    assert_times_out_like_etcd(
        "put",
        request_timeout,
        client.put(PutRequest { key: b"during".to_vec(), value: b"1".to_vec(), ..Default::default() }),
    )
    .await;
    // etcd's ReadIndex wait ends with its request timeout too, whatever the leader's state.
    assert_times_out_like_etcd(
        "linearizable read",
        request_timeout,
        client.range(RangeRequest { key: b"before".to_vec(), ..Default::default() }),
    )
    .await;
    let started = Instant::now();
    let health = common::http_get(&cluster.members[alone], "/health");
    assert!(health.starts_with("HTTP/1.1 503"), "{health}");
    let ready = common::http_get(&cluster.members[alone], "/readyz");
    assert!(ready.starts_with("HTTP/1.1 503") && ready.contains("[-]linearizable_read failed"), "{ready}");
    let took = started.elapsed();
    assert!(
        took < 2 * probe_timeout + SLACK,
        "two probes took {took:?}; each gives up after {probe_timeout:?}"
    );
    let local = client
        .range(RangeRequest { key: b"before".to_vec(), serializable: true, ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("serializable read on a minority: {e}"))
        .into_inner();
    assert_eq!(local.kvs.len(), 1);
    let (seen, _) = keys(&cluster.members[alone], "\0", true).await;
    assert!(!seen.contains("during"), "nothing unacknowledged is visible on the minority: {seen:?}");
    cluster.pause(leader, false);
    cluster.pause(other, false);
    // The resumed members may hold an election first (the lone member's campaigns raised the
    // term): a write can meet "leader changed" until they settle, as an etcd client would.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = PutRequest { key: b"after".to_vec(), value: b"1".to_vec(), ..Default::default() };
        match kv(&cluster.members[other]).await.put(put).await {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (seen, _) = keys(&cluster.members[alone], "\0", false).await;
    // "during" timed out, an unknown outcome as in etcd: a forwarded proposal that reached the
    // paused leader's socket may commit once it resumes. Only acknowledged writes are promised.
    assert!(seen.contains("after") && seen.contains("before"), "{seen:?}");
    assert_same_history(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_from_a_snapshot() {
    let dir = tempdir();
    let flags = ["--snapshot-count=50", "--experimental-snapshot-catchup-entries=10"];
    let mut cluster = Cluster::start_with(dir.path(), 3, &flags);
    let leader = cluster.leader().await;
    let behind = (leader + 1) % 3;
    cluster.members[behind].stop();
    let mut client = kv(&cluster.members[leader]).await;
    for i in 0..300 {
        let put = PutRequest {
            key: format!("s/{i:03}").into_bytes(),
            value: vec![b'v'; 100],
            ..Default::default()
        };
        client.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    }
    cluster.start_all();
    let want: BTreeSet<String> = (0..300).map(|i| format!("s/{i:03}")).collect();
    assert_eq!(keys(&cluster.members[behind], "s/", false).await.0, want);
    assert!(
        cluster.members[behind].log_text().contains("installed raft snapshot from the leader"),
        "the member should have caught up through a snapshot"
    );
    assert_same_history(&cluster).await;
    // It goes on applying the log after the snapshot.
    kv(&cluster.members[behind])
        .await
        .put(PutRequest { key: b"s/after".to_vec(), value: b"1".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_same_history(&cluster).await;
}

/// `etcdctl member add --learner`, the new member catches up (through a snapshot), promote,
/// then `member remove` of the leader: the others elect a new one and go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_add_learner_promote_and_remove_the_leader() {
    let dir = tempdir();
    let flags = ["--snapshot-count=50", "--experimental-snapshot-catchup-entries=10"];
    let mut cluster = Cluster::start_with(dir.path(), 3, &flags);
    let mut client = kv(&cluster.members[0]).await;
    for i in 0..200 {
        let put =
            PutRequest { key: format!("a/{i:03}").into_bytes(), value: b"v".to_vec(), ..Default::default() };
        client.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let all = cluster.endpoints();
    let (new, peer) = cluster.joiner(dir.path(), "m3", &flags);
    let added = etcdctl(
        &cluster.members[1],
        &["--endpoints", &all, "member", "add", "m3", "--learner", "--peer-urls", &peer],
        None,
    );
    assert_eq!(added.code, 0, "{added:?}");
    let id = added.stdout.split_whitespace().nth(1).unwrap_or_else(|| panic!("{added:?}")).to_string();
    assert!(added.stdout.contains("added to cluster"), "{added:?}");
    // A learner that has not started cannot be promoted yet.
    let early = etcdctl(&cluster.members[0], &["member", "promote", &id], None);
    assert_ne!(early.code, 0, "{early:?}");
    assert!(
        early.stderr.contains("can only promote a learner member which is in sync with leader"),
        "{early:?}"
    );
    cluster.start_all();
    let want: BTreeSet<String> = (0..200).map(|i| format!("a/{i:03}")).collect();
    assert_eq!(keys(&cluster.members[new], "a/", true).await.0, want);
    assert!(
        cluster.members[new].log_text().contains("installed raft snapshot from the leader"),
        "the new member catches up through a snapshot"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let promoted = etcdctl(&cluster.members[2], &["member", "promote", &id], None);
        if promoted.code == 0 {
            assert!(promoted.stdout.contains("promoted"), "{promoted:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{promoted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = etcdctl(&cluster.members[new], &["member", "list"], None);
    assert_eq!(list.stdout.lines().count(), 4, "{list:?}");
    assert!(list.stdout.lines().all(|l| l.ends_with(", false")), "all voters: {list:?}");
    assert!(
        list.stdout.contains(&format!("{id}, started, m3, {peer}, {}", cluster.members[new].url())),
        "{list:?}"
    );

    let leader = cluster.leader().await;
    let leader_id = etcdctl(&cluster.members[leader], &["endpoint", "status", "-w", "fields"], None);
    let leader_id = leader_id
        .stdout
        .lines()
        .find(|l| l.starts_with("\"MemberID\""))
        .and_then(|l| l.split(" : ").nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{leader_id:?}"));
    let other = (leader + 1) % cluster.members.len();
    let removed = etcdctl(&cluster.members[other], &["member", "remove", &format!("{leader_id:x}")], None);
    assert_eq!(removed.code, 0, "{removed:?}");
    cluster.members[leader].kill9();
    assert_ne!(cluster.leader().await, leader);
    let list = etcdctl(&cluster.members[other], &["member", "list"], None);
    assert_eq!(list.stdout.lines().count(), 3, "{list:?}");
    kv(&cluster.members[new])
        .await
        .put(PutRequest { key: b"a/after".to_vec(), value: b"v".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_same_history(&cluster).await;
}

/// A watch opened with `hasleader` (clientv3.WithRequireLeader) ends with "etcdserver: no
/// leader" once its member has been without a leader for three election timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_leader_watches_end_when_the_leader_is_lost() {
    use rkv_proto::etcdserverpb::{watch_client::WatchClient, watch_request::RequestUnion, WatchRequest};
    let dir = tempdir();
    let cluster = Cluster::start(dir.path(), 3);
    let leader = cluster.leader().await;
    let alone = (leader + 1) % 3;
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"w".to_vec(),
            ..Default::default()
        })),
    };
    let mut client = WatchClient::new(channel(&cluster.members[alone]).await);
    let (requests, rx) = tokio::sync::mpsc::channel(4);
    requests.send(create).await.unwrap_or_else(|e| panic!("{e}"));
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert("hasleader", "true".parse().unwrap_or_else(|_| panic!()));
    let mut stream = client.watch(request).await.unwrap_or_else(|e| panic!("{e}")).into_inner();
    let created = stream.message().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(created.is_some_and(|r| r.created));
    cluster.pause(leader, true);
    cluster.pause((leader + 2) % 3, true);
    let started = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .unwrap_or_else(|_| panic!("the stream should end without a leader"));
    let status = end.expect_err("ends with an error");
    assert_eq!((status.code(), status.message()), (tonic::Code::Unavailable, "etcdserver: no leader"));
    // Three election timeouts (3s) after the leader went silent, plus detecting that.
    assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
    cluster.pause(leader, false);
    cluster.pause((leader + 2) % 3, false);
    drop(requests);
}

/// rctl's member and endpoint --cluster commands print what etcdctl 3.5 prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rctl_member_commands_print_like_etcdctl() {
    use common::rctl;
    let dir = tempdir();
    let cluster = Cluster::start(dir.path(), 3);
    let m = &cluster.members[1];
    let same = |args: &[&str]| {
        let (want, got) = (etcdctl(m, args, None), rctl(m, args, None));
        assert_eq!(want, got, "{args:?}");
        want
    };
    for format in ["simple", "json", "table", "fields"] {
        same(&["member", "list", "-w", format]);
    }
    // Status and health carry sizes and timings: compare the endpoints they name.
    for what in ["status", "health"] {
        let names = |run: common::CliRun| {
            assert_eq!(run.code, 0, "{run:?}");
            let mut names: Vec<String> = run
                .stdout
                .lines()
                .map(|l| l.split([',', ' ']).next().unwrap_or_default().to_string())
                .collect();
            names.sort();
            names
        };
        let want = names(etcdctl(m, &["endpoint", what, "--cluster"], None));
        assert_eq!(want.len(), 3, "{want:?}");
        assert_eq!(want, names(rctl(m, &["endpoint", what, "--cluster"], None)), "endpoint {what} --cluster");
    }
    for args in [
        &["member", "remove", "zz"][..],
        &["member", "remove", "1234"],
        &["member", "promote", "1234"],
        &["member", "add", "x"],
        &["member", "add", "x", "--peer-urls", "not a url"],
        &["member", "update", "1234", "--peer-urls", "http://127.0.0.1:1"],
    ] {
        same(args);
    }
    same(&["defrag", "--cluster"]);
    // Add a learner with one tool and remove it with the other: same lines, other IDs.
    // Members are listed by ID, and the two adds got different random IDs: compare the
    // ETCD_INITIAL_CLUSTER entries as a set.
    let shape = |s: &str| {
        s.split_whitespace()
            .filter(|w| w.len() < 8 || !w.chars().all(|c| c.is_ascii_hexdigit()))
            .map(|w| match w.strip_prefix("ETCD_INITIAL_CLUSTER=") {
                Some(list) => {
                    let mut entries: Vec<&str> = list.trim_matches('"').split(',').collect();
                    entries.sort();
                    format!("ETCD_INITIAL_CLUSTER={}", entries.join(","))
                }
                None => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let by_etcdctl = etcdctl(m, &["member", "add", "x", "--learner", "--peer-urls", &peer], None);
    let id = by_etcdctl.stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
    let removed_by_rctl = rctl(m, &["member", "remove", &id], None);
    let by_rctl = rctl(m, &["member", "add", "x", "--learner", "--peer-urls", &peer], None);
    let id2 = by_rctl.stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
    let removed_by_etcdctl = etcdctl(m, &["member", "remove", &id2], None);
    assert_eq!((by_etcdctl.code, by_rctl.code), (0, 0), "{by_etcdctl:?} {by_rctl:?}");
    // The same lines but for the IDs (and the order they give the members).
    assert_eq!(shape(&by_etcdctl.stdout), shape(&by_rctl.stdout));
    assert_eq!(shape(&removed_by_etcdctl.stdout), shape(&removed_by_rctl.stdout));
    assert!(
        removed_by_rctl.stdout.contains(&format!("Member {id:>16} removed from cluster")),
        "{removed_by_rctl:?}"
    );
}

/// Five members (seven with RKV_CLUSTER_SIZE=7) tolerate ⌊(N-1)/2⌋ failures and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_five_survives_two_failures_but_not_three() {
    let n: usize = std::env::var("RKV_CLUSTER_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let tolerated = (n - 1) / 2;
    let dir = tempdir();
    let mut cluster = Cluster::start(dir.path(), n);
    for i in 0..n {
        let put =
            PutRequest { key: format!("q/{i}").into_bytes(), value: b"v".to_vec(), ..Default::default() };
        kv(&cluster.members[i]).await.put(put).await.unwrap_or_else(|e| panic!("put through m{i}: {e}"));
    }
    // Kill the leader first, then others, down to a bare quorum.
    let first = cluster.leader().await;
    let mut killed = vec![first];
    killed.extend((0..n).filter(|i| *i != first).take(tolerated - 1));
    for &i in &killed {
        cluster.members[i].kill9();
    }
    let survivor = (0..n).find(|i| !killed.contains(i)).unwrap_or_else(|| panic!("no survivor"));
    let mut client = kv(&cluster.members[survivor]).await;
    client
        .put(PutRequest { key: b"q/quorum".to_vec(), value: b"v".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| {
            panic!("a bare quorum must write: {e}\n{}", cluster.members[survivor].log_text())
        });
    let one_more = (0..n).find(|i| !killed.contains(i) && *i != survivor).unwrap_or_else(|| panic!("none"));
    cluster.members[one_more].kill9();
    let err = client
        .put(PutRequest { key: b"q/minority".to_vec(), value: b"v".to_vec(), ..Default::default() })
        .await
        .expect_err("less than a quorum must not write");
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    cluster.start_all();
    let (seen, _) = keys(&cluster.members[killed[0]], "q/", false).await;
    assert!(
        seen.contains("q/quorum") && seen.len() == n + 1 + usize::from(seen.contains("q/minority")),
        "{seen:?}"
    );
    assert_same_history(&cluster).await;
}

/// Leases in a cluster: granted and kept alive through a follower, expired by the leader
/// through the log on every member, and surviving a leader change with a renewed TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_kept_alive_through_followers_and_expire_everywhere() {
    use rkv_proto::etcdserverpb::{
        lease_client::LeaseClient, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest,
    };
    let dir = tempdir();
    let mut cluster = Cluster::start(dir.path(), 3);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut leases = LeaseClient::new(channel(&cluster.members[follower]).await);
    let grant = |id, ttl| LeaseGrantRequest { id, ttl };
    leases.lease_grant(grant(1, 3)).await.unwrap_or_else(|e| panic!("{e}"));
    leases.lease_grant(grant(2, 3)).await.unwrap_or_else(|e| panic!("{e}"));
    for (key, lease) in [("l/short", 1), ("l/kept", 2)] {
        let put =
            PutRequest { key: key.as_bytes().to_vec(), value: b"v".to_vec(), lease, ..Default::default() };
        kv(&cluster.members[follower]).await.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    }
    // Keep lease 2 alive through the follower for longer than its TTL; lease 1 expires.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = leases
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tx.send(LeaseKeepAliveRequest { id: 2 }).await.unwrap_or_else(|e| panic!("{e}"));
        let answer =
            answers.message().await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("end"));
        assert_eq!(answer.ttl, 3, "a kept-alive lease is renewed to its TTL");
        let mut gone = true;
        for m in &cluster.members {
            gone &= !keys(m, "l/", false).await.0.contains("l/short");
        }
        if gone {
            break;
        }
        assert!(Instant::now() < deadline, "lease 1 never expired");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for m in &cluster.members {
        assert!(
            keys(m, "l/", false).await.0.contains("l/kept"),
            "kept-alive lease's key on {}",
            m.endpoint()
        );
    }
    let ttl = leases
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 1, keys: false })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(ttl.ttl, -1, "expired lease");
    drop(tx);
    // A new leader renews every lease: lease 2 outlives the old leader's deadline.
    cluster.members[leader].kill9();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    let left = LeaseClient::new(channel(&cluster.members[new_leader]).await)
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 2, keys: true })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert!(left.ttl > 0 && left.keys == vec![b"l/kept".to_vec()], "{left:?}");
    cluster.start_all();
    assert_same_history(&cluster).await;
}

/// `rctl snapshot save` from a member of a cluster under load, `rctl snapshot restore` into the
/// three members of a new cluster: the same history up to the snapshot's revision, equal
/// HashKV everywhere (and equal to the old cluster's at that revision), writes going on from
/// the next revision; damaged files are refused without creating anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_under_load_restores_a_new_cluster() {
    use common::rctl;
    let dir = tempdir();
    let old = Cluster::start(&dir.path().join("old"), 3);
    let mut client = kv(&old.members[0]).await;
    for i in 0..100 {
        let put =
            PutRequest { key: format!("k/{i:03}").into_bytes(), value: vec![b'v'; i], ..Default::default() };
        client.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let load = WriteLoad::start(&old, 1);
    load.wait_for_more(50).await;
    let file = dir.path().join("backup.db");
    let saved = rctl(&old.members[1], &["snapshot", "save", &file.display().to_string()], None);
    assert_eq!(saved.code, 0, "{saved:?}");
    load.stop().await;

    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let restore =
        |file: &std::path::Path, name: &str, data_dir: &std::path::Path, initial: &str, peer: &str| {
            rctl(
                &old.members[0],
                &[
                    "snapshot",
                    "restore",
                    &file.display().to_string(),
                    "--name",
                    name,
                    "--data-dir",
                    &data_dir.display().to_string(),
                    "--initial-cluster",
                    initial,
                    "--initial-cluster-token",
                    "restored",
                    "--initial-advertise-peer-urls",
                    peer,
                ],
                None,
            )
        };
    let peers: Vec<String> = (0..3).map(|_| format!("http://127.0.0.1:{}", common::free_port())).collect();
    let initial: Vec<String> = peers.iter().enumerate().map(|(i, p)| format!("n{i}={p}")).collect();
    let initial = initial.join(",");
    for (what, bad) in [
        ("empty", Vec::new()),
        ("truncated", bytes[..bytes.len() / 2].to_vec()),
        ("flipped", {
            let mut b = bytes.clone();
            b[100] ^= 0x40;
            b
        }),
    ] {
        let bad_file = dir.path().join(format!("{what}.db"));
        std::fs::write(&bad_file, bad).unwrap_or_else(|e| panic!("{e}"));
        let target = dir.path().join(format!("bad-{what}"));
        let run = restore(&bad_file, "n0", &target, &initial, &peers[0]);
        assert_ne!(run.code, 0, "{what}: {run:?}");
        assert!(!target.exists(), "{what}: nothing may be written");
    }
    let mut members = Vec::new();
    let mut revision = 0;
    for (i, peer) in peers.iter().enumerate() {
        let member_dir = dir.path().join("new").join(format!("n{i}"));
        std::fs::create_dir_all(&member_dir).unwrap_or_else(|e| panic!("{e}"));
        let run = restore(&file, &format!("n{i}"), &member_dir.join("data"), &initial, peer);
        assert_eq!(run.code, 0, "{run:?}");
        revision = run
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "revision")
            .nth(1)
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("{run:?}"));
        members.push(Rkv::new(
            &member_dir,
            &[
                &format!("--name=n{i}"),
                &format!("--initial-cluster={initial}"),
                &format!("--initial-advertise-peer-urls={peer}"),
                &format!("--listen-peer-urls={peer}"),
                "--initial-cluster-token=restored",
            ],
        ));
    }
    let peer_names = peers.iter().enumerate().map(|(i, p)| (format!("n{i}"), p.clone())).collect();
    let mut new = Cluster { members, peers: peer_names };
    new.start_all();
    let old_hash = hash_kv(&old.members[2], revision).await;
    let mut old_kvs = kv(&old.members[2])
        .await
        .range(RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            revision,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    for m in &new.members {
        assert_eq!(hash_kv(m, revision).await, old_hash, "history up to {revision} on {}", m.endpoint());
        let mut got = kv(m)
            .await
            .range(RangeRequest { key: b"\0".to_vec(), range_end: b"\0".to_vec(), ..Default::default() })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner();
        assert_eq!(got.header.take().map(|h| h.revision), Some(revision));
        old_kvs.header = None;
        assert_eq!(got, old_kvs, "keys at the snapshot revision on {}", m.endpoint());
    }
    let resp = kv(&new.members[1])
        .await
        .put(PutRequest { key: b"after".to_vec(), value: b"1".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(resp.header.map(|h| h.revision), Some(revision + 1));
    assert_same_history(&new).await;
}
