//! Watch guarantees on rkv alone: a validator over streams recorded under concurrent writers,
//! a stalled stream that neither blocks others nor loses events, resuming after a restart,
//! compacted start revisions, progress, and etcdctl watch against etcd.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use rkv_proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, CompactionRequest,
    DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest,
    WatchResponse,
};
use rkv_proto::mvccpb::event::EventType;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use common::cluster::prefix_end;
use common::watch::WatchConn;
use common::{channel, tempdir, Etcd, Rkv, Server};

fn put(k: &str, v: &str) -> PutRequest {
    PutRequest { key: k.into(), value: v.into(), ..Default::default() }
}

fn prefix_watch(prefix: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: prefix.into(),
        range_end: prefix_end(prefix.as_bytes()),
        start_revision: start,
        prev_kv: true,
        ..Default::default()
    }
}

/// Checks one recorded stream of a watcher: ordered, no duplicates, each revision whole in one
/// response, prev_kv equal to the store at revision-1; returns (revision, key, type) in order.
async fn validate(client: &mut KvClient<Channel>, resps: &[WatchResponse]) -> Vec<(i64, Vec<u8>, i32)> {
    let mut out = Vec::new();
    let mut last_rev = 0;
    for r in resps {
        let revs: Vec<i64> =
            r.events.iter().filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)).collect();
        assert!(revs.windows(2).all(|w| w[0] <= w[1]), "events out of order in a response: {revs:?}");
        if let Some(first) = revs.first() {
            assert!(*first > last_rev, "revision {first} after {last_rev}: reordered, duplicated or split");
            last_rev = *revs.last().unwrap_or(first);
        }
        for ev in &r.events {
            let kv = ev.kv.clone().unwrap_or_default();
            let before = kv.mod_revision.checked_sub(1).map(|rev| RangeRequest {
                key: kv.key.clone(),
                revision: rev,
                ..Default::default()
            });
            if let Some(req) = before {
                let prev = kv.clone();
                let at = kvs_at(kv_range(client, req).await);
                let is_create = ev.r#type == EventType::Put as i32 && prev.version == 1;
                assert_eq!(ev.prev_kv, if is_create { None } else { at }, "prev_kv of {ev:?}");
            }
            out.push((kv.mod_revision, kv.key, ev.r#type));
        }
    }
    out
}

async fn kv_range(kv: &mut KvClient<Channel>, req: RangeRequest) -> RangeResponse {
    kv.range(req).await.unwrap_or_else(|e| panic!("{e}")).into_inner()
}

fn kvs_at(r: RangeResponse) -> Option<rkv_proto::mvccpb::KeyValue> {
    r.kvs.into_iter().next()
}

/// Reads responses of `conn` until the watcher `id` has seen revision `upto`.
async fn record(conn: &mut WatchConn, upto: i64) -> Vec<WatchResponse> {
    let mut out = Vec::new();
    let mut seen = 0;
    while seen < upto {
        let r = conn.expect(&format!("events up to {upto} (seen {seen})")).await;
        if let Some(rev) = r.events.last().and_then(|e| e.kv.as_ref()).map(|kv| kv.mod_revision) {
            seen = rev;
        }
        if !r.created {
            out.push(r);
        }
    }
    out
}

/// A put of `key`; the revision it was answered with.
async fn put_at(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let answer = kv.put(put(key, value)).await.unwrap_or_else(|e| panic!("put {key}: {e}"));
    answer.into_inner().header.map_or(0, |h| h.revision)
}

/// Every key under `prefix` with its value, read linearizably, and the revision of the read.
async fn list(kv: &mut KvClient<Channel>, prefix: &str) -> (HashMap<Vec<u8>, Vec<u8>>, i64) {
    let req =
        RangeRequest { key: prefix.into(), range_end: prefix_end(prefix.as_bytes()), ..Default::default() };
    let listed = kv_range(kv, req).await;
    let revision = listed.header.map_or(0, |h| h.revision);
    (listed.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect(), revision)
}

/// What one writer of `spawn_writers` did.
struct Written {
    /// How many of its writes changed something (a delete of a missing key changes nothing).
    changes: usize,
    /// The highest revision its writes were answered with.
    last_rev: i64,
}

/// `writers` concurrent writers, each on a connection of its own making `writes` writes: write
/// i of writer w goes to `key(w, i)`, a delete every `delete_every`th write, else a put.
async fn spawn_writers(
    rkv: &Rkv,
    writers: usize,
    writes: usize,
    delete_every: usize,
    key: fn(usize, usize) -> String,
) -> Vec<JoinHandle<Written>> {
    let mut handles = Vec::new();
    for w in 0..writers {
        let mut kv = KvClient::new(channel(rkv).await);
        handles.push(tokio::spawn(async move {
            let mut written = Written { changes: 0, last_rev: 0 };
            for i in 0..writes {
                let key = key(w, i);
                let header = if i % delete_every == delete_every - 1 {
                    let del = DeleteRangeRequest { key: key.into(), ..Default::default() };
                    let r = kv.delete_range(del).await.unwrap_or_else(|e| panic!("{e}")).into_inner();
                    written.changes += r.deleted as usize;
                    r.header
                } else {
                    let r = kv.put(put(&key, &format!("{w}-{i}"))).await.unwrap_or_else(|e| panic!("{e}"));
                    written.changes += 1;
                    r.into_inner().header
                };
                written.last_rev = written.last_rev.max(header.map_or(0, |h| h.revision));
            }
            written
        }));
    }
    handles
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_validated_streams() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    // Watchers opened before, during and after the writes; all watch the whole prefix.
    let mut early = WatchConn::open_watching(&rkv, prefix_watch("/v/", 0)).await;
    let writers = spawn_writers(&rkv, 4, 150, 9, |w, i| format!("/v/{}", (w * 7 + i) % 23)).await;
    let mut during = WatchConn::open_watching(&rkv, prefix_watch("/v/", 1)).await;
    let mut changes = 0;
    for w in writers {
        changes += w.await.unwrap_or_else(|e| panic!("{e}")).changes;
    }
    let mut kv = KvClient::new(channel(&rkv).await);
    let last = kv_range(&mut kv, RangeRequest { key: "/v/".into(), ..Default::default() })
        .await
        .header
        .map_or(0, |h| h.revision);
    let mut late = WatchConn::open_watching(&rkv, prefix_watch("/v/", 1)).await;

    let reference = validate(&mut kv, &record(&mut late, last).await).await;
    let during = validate(&mut kv, &record(&mut during, last).await).await;
    let early = validate(&mut kv, &record(&mut early, last).await).await;
    // No gaps: a watcher from revision 1 sees every change; the others see a suffix of it.
    assert_eq!(reference.len(), changes, "one event per acknowledged change");
    assert_eq!(during, reference);
    assert!(reference.ends_with(&early), "the early watcher's stream is not a suffix of history");
    assert_eq!(reference.first().map(|e| e.0), Some(2));
    let revs: Vec<i64> = reference.iter().map(|e| e.0).collect();
    assert!(
        revs.windows(2).all(|w| w[1] == w[0] + 1),
        "revisions must be contiguous: every write changed one key"
    );

    // After a progress response at revision N, no event at or below N follows.
    late.progress().await;
    let p = late.expect("progress").await;
    assert_eq!((p.watch_id, p.header.map(|h| h.revision)), (-1, Some(last)));
    kv.put(put("/v/after", "x")).await.unwrap_or_else(|e| panic!("{e}"));
    let next = late.expect("event after progress").await;
    assert!(next.events.iter().all(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision > last)));
}

/// A stream whose client never reads is not allowed to delay anyone else, and once it reads
/// it gets every event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_stream_delays_no_one_and_loses_nothing() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    // The stalled client: a raw stream whose responses are not read until the end.
    let (stalled_tx, stalled_rx) = mpsc::channel(8);
    let mut client = WatchClient::new(channel(&rkv).await);
    stalled_tx
        .send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(prefix_watch("/s/", 0))) })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stalled =
        client.watch(ReceiverStream::new(stalled_rx)).await.unwrap_or_else(|e| panic!("{e}")).into_inner();
    let mut live = WatchConn::open_watching(&rkv, prefix_watch("/s/", 0)).await;

    let mut kv = KvClient::new(channel(&rkv).await);
    let value = "x".repeat(4096);
    let n = 2000;
    let mut last = 0;
    for i in 0..n {
        last = put_at(&mut kv, &format!("/s/{i}"), &value).await;
    }
    // The live stream has everything although the stalled one has read nothing (~8 MB behind).
    let got = record(&mut live, last).await;
    assert_eq!(got.iter().map(|r| r.events.len()).sum::<usize>(), n);

    // Now the stalled client reads: every event, in order, exactly once.
    let mut revs = Vec::new();
    while revs.last() != Some(&last) {
        let r = tokio::time::timeout(Duration::from_secs(30), stalled.message())
            .await
            .unwrap_or_else(|_| panic!("stalled stream never caught up (at {:?})", revs.last()))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("stream ended"));
        revs.extend(r.events.iter().filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)));
    }
    assert_eq!(revs, (last - n as i64 + 1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_restart_misses_nothing() {
    let dir = tempdir();
    let mut rkv = Rkv::start(dir.path());
    let mut kv = KvClient::new(channel(&rkv).await);
    let mut w = WatchConn::open_watching(&rkv, prefix_watch("/r/", 0)).await;
    let mut last = 0;
    for i in 0..20 {
        last = put_at(&mut kv, &format!("/r/{i}"), "a").await;
    }
    let seen = record(&mut w, last).await;
    let resume_from =
        seen.last().and_then(|r| r.events.last()).and_then(|e| e.kv.as_ref()).map_or(0, |kv| kv.mod_revision)
            + 1;
    drop(w);
    rkv.kill9();
    rkv.restart();
    let mut kv = KvClient::new(channel(&rkv).await);
    for i in 20..30 {
        last = put_at(&mut kv, &format!("/r/{i}"), "b").await;
    }
    let mut w = WatchConn::open_watching(&rkv, prefix_watch("/r/", resume_from)).await;
    let resumed = record(&mut w, last).await;
    let revs: Vec<i64> = resumed
        .iter()
        .flat_map(|r| r.events.iter().filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision)))
        .collect();
    assert_eq!(revs, (resume_from..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_start_is_created_then_canceled() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut kv = KvClient::new(channel(&rkv).await);
    for i in 0..6 {
        kv.put(put("/c/k", &i.to_string())).await.unwrap_or_else(|e| panic!("{e}"));
    }
    kv.compact(CompactionRequest { revision: 5, physical: true }).await.unwrap_or_else(|e| panic!("{e}"));
    let mut w = WatchConn::open(&rkv).await;
    // A synced watcher is not canceled by a later compaction.
    w.create(prefix_watch("/c/", 0)).await;
    let synced = w.expect("created").await;
    w.create(prefix_watch("/c/", 3)).await;
    let created = w.expect("created").await;
    assert!(created.created && !created.canceled);
    let canceled = w.expect("compaction cancel").await;
    assert_eq!(
        (canceled.watch_id, canceled.canceled, canceled.compact_revision),
        (created.watch_id, true, 5)
    );
    kv.compact(CompactionRequest { revision: 7, physical: true }).await.unwrap_or_else(|e| panic!("{e}"));
    kv.put(put("/c/k", "after")).await.unwrap_or_else(|e| panic!("{e}"));
    let ev = w.expect("event").await;
    assert_eq!(ev.watch_id, synced.watch_id);
    assert_eq!(ev.events.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_notify_at_the_configured_interval() {
    let dir = tempdir();
    let rkv = Rkv::start_with(dir.path(), &["--experimental-watch-progress-notify-interval=200ms"]);
    let mut w = WatchConn::open(&rkv).await;
    w.create(WatchCreateRequest { progress_notify: true, ..prefix_watch("/p/", 0) }).await;
    let created = w.expect("created").await;
    let notify = w.expect("progress notification").await;
    assert_eq!(notify.watch_id, created.watch_id);
    assert!(notify.events.is_empty() && !notify.canceled);
    assert_eq!(notify.header.map(|h| h.revision), Some(1));
}

/// Runs a watch client until it has printed the last event of the session (w/a=3).
async fn watch_output(program: &str, ep: &str, args: &[&str]) -> String {
    let mut child = std::process::Command::new(program)
        .arg(format!("--endpoints={ep}"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let text = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !(text.ends_with("3\n") || text.contains("\"value\":\"Mw==\"")) {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = child.kill();
    let _ = child.wait();
    text
}

/// etcdctl watch prints the same against rkv as against etcd, and rctl watch prints the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_and_rctl_watch_print_like_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let sessions: [&[&str]; 3] = [
        &["watch", "w/", "--prefix", "--rev=1"],
        &["watch", "w/", "--prefix", "--rev=2", "--prev-kv"],
        &["watch", "w/a", "--rev=1", "-w", "json"],
    ];
    let mut outputs = HashMap::new();
    for server in [&etcd as &dyn Server, &rkv] {
        for args in [["put", "w/a", "1"], ["put", "w/b", "2"], ["del", "w/a", ""], ["put", "w/a", "3"]] {
            let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
            assert_eq!(common::etcdctl(server, &args, None).code, 0);
        }
        let mut texts = Vec::new();
        for args in sessions {
            texts.push(watch_output("etcdctl", &server.endpoint(), args).await);
        }
        outputs.insert(server.endpoint() == rkv.endpoint(), texts);
    }
    assert_eq!(outputs.get(&true), outputs.get(&false));
    assert!(
        outputs[&true][0].starts_with("PUT\nw/a\n1\nPUT\nw/b\n2\nDELETE\nw/a\n\nPUT\nw/a\n3\n"),
        "{:?}",
        outputs[&true]
    );
    let mut rctl_texts = Vec::new();
    for args in sessions {
        rctl_texts.push(watch_output(env!("CARGO_BIN_EXE_rctl"), &rkv.endpoint(), args).await);
    }
    assert_eq!(Some(&rctl_texts), outputs.get(&true), "rctl watch (left) vs etcdctl watch (right)");
}

/// kube-apiserver's pattern: list a prefix, watch it from the list revision + 1 with prev_kv and
/// progress_notify, and ask for progress while writers run. After a progress response at N no
/// event at or below N may follow, and list + events rebuild exactly the final state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_then_watch_with_progress_requests_under_writes() {
    let dir = tempdir();
    let rkv = Rkv::start_with(dir.path(), &["--experimental-watch-progress-notify-interval=100ms"]);
    let mut kv = KvClient::new(channel(&rkv).await);
    for i in 0..20 {
        kv.put(put(&format!("/registry/pods/p{i}"), "0")).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let (mut state, list_rev) = list(&mut kv, "/registry/pods/").await;

    let watch = WatchCreateRequest { progress_notify: true, ..prefix_watch("/registry/pods/", list_rev + 1) };
    let mut w = WatchConn::open_watching(&rkv, watch).await;
    let mut writers =
        spawn_writers(&rkv, 3, 100, 7, |w, i| format!("/registry/pods/p{}", (w * 31 + i) % 25)).await;
    let mut final_rev = 0;
    let mut progress_floor = list_rev;
    let mut next_rev = list_rev + 1;
    let mut writers_done = false;
    let mut progress_requests = 0;
    loop {
        if !writers_done && writers.iter().all(|h| h.is_finished()) {
            for h in writers.drain(..) {
                final_rev = final_rev.max(h.await.unwrap_or_else(|e| panic!("{e}")).last_rev);
            }
            writers_done = true;
        }
        if progress_requests < 50 {
            w.progress().await;
            progress_requests += 1;
        }
        let r = w.expect("watch response").await;
        if r.events.is_empty() {
            // A progress response (requested: watch_id -1, or periodic): nothing at or below it
            // may follow.
            progress_floor = progress_floor.max(r.header.map_or(0, |h| h.revision));
        }
        for ev in &r.events {
            let kv = ev.kv.clone().unwrap_or_default();
            assert!(
                kv.mod_revision > progress_floor,
                "event at {} after progress at {progress_floor}",
                kv.mod_revision
            );
            assert!(kv.mod_revision >= next_rev, "event at {} went back (next {next_rev})", kv.mod_revision);
            next_rev = kv.mod_revision;
            if ev.r#type == EventType::Delete as i32 {
                assert!(state.remove(&kv.key).is_some(), "DELETE of a key the watcher did not know");
            } else {
                state.insert(kv.key, kv.value);
            }
        }
        if writers_done && next_rev >= final_rev && progress_floor >= final_rev {
            break;
        }
    }
    let (expected, _) = list(&mut kv, "/registry/pods/").await;
    assert_eq!(state, expected, "list + watch events must rebuild the store");
}

/// A revision whose events (with prev_kv) exceed --max-request-bytes reaches a watcher that
/// asked for fragments in pieces, all but the last marked `fragment`, and whole to one that did
/// not ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_revisions_are_fragmented_only_when_asked() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut w = WatchConn::open(&rkv).await;
    w.create(WatchCreateRequest { fragment: true, watch_id: 1, ..prefix_watch("/f/", 0) }).await;
    w.expect("created").await;
    w.create(WatchCreateRequest { watch_id: 2, ..prefix_watch("/f/", 0) }).await;
    w.expect("created").await;
    let mut kv = KvClient::new(channel(&rkv).await);
    // Three 400 KB puts in one txn fit the 1.5 MiB request limit; rewriting them makes events
    // whose prev_kv doubles them to 2.4 MB.
    let txn = |v: &str| rkv_proto::etcdserverpb::TxnRequest {
        compare: vec![],
        success: (0..3)
            .map(|i| rkv_proto::etcdserverpb::RequestOp {
                request: Some(rkv_proto::etcdserverpb::request_op::Request::RequestPut(put(
                    &format!("/f/{i}"),
                    &v.repeat(400 * 1024),
                ))),
            })
            .collect(),
        failure: vec![],
    };
    kv.txn(txn("a")).await.unwrap_or_else(|e| panic!("{e}"));
    let rev = kv
        .txn(txn("b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner()
        .header
        .map_or(0, |h| h.revision);
    let mut by_id: HashMap<i64, Vec<WatchResponse>> = HashMap::new();
    let events_of = |by_id: &HashMap<i64, Vec<WatchResponse>>, id: i64| {
        by_id.get(&id).map_or(0, |v| v.iter().map(|r| r.events.len()).sum::<usize>())
    };
    while events_of(&by_id, 1) < 6 || events_of(&by_id, 2) < 6 {
        let r = w.expect("events").await;
        by_id.entry(r.watch_id).or_default().push(r);
    }
    let at_rev = |id: i64| -> Vec<WatchResponse> {
        by_id[&id]
            .iter()
            .filter(|r| r.events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision == rev)))
            .cloned()
            .collect()
    };
    let whole = at_rev(2);
    assert_eq!((whole.len(), whole[0].events.len(), whole[0].fragment), (1, 3, false));
    let pieces = at_rev(1);
    assert!(pieces.len() >= 2, "expected fragments, got {} response(s)", pieces.len());
    let flags: Vec<bool> = pieces.iter().map(|r| r.fragment).collect();
    assert!(flags[..flags.len() - 1].iter().all(|f| *f) && !flags[flags.len() - 1], "{flags:?}");
    assert_eq!(pieces.iter().map(|r| r.events.len()).sum::<usize>(), 3);
    for r in &pieces {
        assert!(prost::Message::encoded_len(r) <= 1_572_864 + 4096, "a fragment is over the limit");
    }
}

/// The etcd-client crate's watch: prefix watch from a revision with prev_kv.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_through_etcd_client() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut c = etcd_client::Client::connect([rkv.endpoint()], None).await.unwrap_or_else(|e| panic!("{e}"));
    c.put("/ec/a", "1", None).await.unwrap_or_else(|e| panic!("{e}"));
    c.put("/ec/a", "2", None).await.unwrap_or_else(|e| panic!("{e}"));
    c.delete("/ec/a", None).await.unwrap_or_else(|e| panic!("{e}"));
    let opts = etcd_client::WatchOptions::new().with_prefix().with_start_revision(2).with_prev_key();
    let (_watcher, mut stream) = c.watch("/ec/", Some(opts)).await.unwrap_or_else(|e| panic!("{e}"));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let resp =
            stream.message().await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("ended"));
        for ev in resp.events() {
            let kv = ev.kv().unwrap_or_else(|| panic!("event without kv"));
            let prev = ev.prev_kv().map(|p| p.value().to_vec());
            seen.push((format!("{:?}", ev.event_type()), kv.mod_revision(), kv.value().to_vec(), prev));
        }
    }
    assert_eq!(
        seen,
        vec![
            ("Put".to_string(), 2, b"1".to_vec(), None),
            ("Put".to_string(), 3, b"2".to_vec(), Some(b"1".to_vec())),
            ("Delete".to_string(), 4, vec![], Some(b"2".to_vec())),
        ]
    );
}

/// `watch -i`: watch and progress commands read from stdin, the same output from rctl as
/// from etcdctl (on rkv), including the invalid-line messages and the exit at end of input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_watch_rctl_like_etcdctl() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    for args in [["put", "i/a", "1"], ["put", "i/b", "2"]] {
        assert_eq!(common::etcdctl(&rkv, &args, None).code, 0);
    }
    // The input ends only once the client has printed the progress line, so both clients see
    // the same session; then end of input ends the command.
    let session = |program: &'static str, ep: String| {
        tokio::task::spawn_blocking(move || {
            use std::io::{BufRead, BufReader, Write};
            let mut child = std::process::Command::new(program)
                .arg(format!("--endpoints={ep}"))
                .args(["watch", "-i"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("{e}"));
            let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("stdin"));
            writeln!(stdin, "bogus\nwatch\nwatch --prefix i/ --rev=1\nprogress")
                .unwrap_or_else(|e| panic!("{e}"));
            let mut stdout = BufReader::new(child.stdout.take().unwrap_or_else(|| panic!("stdout")));
            let mut text = String::new();
            while !text.contains("progress notify") {
                let mut line = String::new();
                if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                text.push_str(&line);
            }
            drop(stdin);
            let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
            let stderr: String = String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| !l.contains("\"level\""))
                .map(|l| format!("{l}\n"))
                .collect();
            (text, stderr, out.status.code())
        })
    };
    let e = session("etcdctl", rkv.endpoint()).await.unwrap_or_else(|e| panic!("{e}"));
    let r = session(env!("CARGO_BIN_EXE_rctl"), rkv.endpoint()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r, e, "rctl (left) vs etcdctl (right)");
    assert_eq!(e.0, "PUT\ni/a\n1\nPUT\ni/b\n2\nprogress notify: 3\n");
}
