//! Leases: etcdctl's lease commands against rkv and etcd, expiry, revoke, restart.

mod common;

use std::time::{Duration, Instant};

use rkv_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest, PutRequest, RangeRequest, WatchCreateRequest,
};
use rkv_proto::mvccpb::event::EventType;

use common::watch::WatchConn;
use common::{channel, etcdctl, tempdir, Etcd, Rkv, Server};

/// Replaces the hex lease ID etcdctl prints (IDs are random on both servers).
fn normalize(text: &str, id: &str) -> String {
    let dec = i64::from_str_radix(id, 16).map(|v| v.to_string()).unwrap_or_default();
    text.replace(id, "<ID>").replace(&dec, "<ID>")
}

fn lease_session(server: &impl Server) -> Vec<String> {
    session_with(server, etcdctl)
}

fn session_with(
    server: &impl Server,
    cli: fn(&dyn Server, &[&str], Option<&str>) -> common::CliRun,
) -> Vec<String> {
    let mut out = Vec::new();
    let grant = cli(server.as_dyn(), &["lease", "grant", "100"], None);
    let id = grant.stdout.split_whitespace().nth(1).unwrap_or_default().to_string();
    out.push(normalize(&grant.stdout, &id));
    for args in [
        vec!["put", "lk1", "v", "--lease", &id],
        vec!["put", "lk2", "v", "--lease", &id],
        vec!["lease", "timetolive", &id, "--keys"],
        vec!["lease", "list"],
        vec!["lease", "keep-alive", "--once", &id],
        vec!["get", "lk", "--prefix", "-w", "json"],
        vec!["put", "lk2", "unleased"],
        vec!["lease", "timetolive", &id, "--keys"],
        vec!["lease", "revoke", &id],
        vec!["get", "lk", "--prefix"],
        vec!["lease", "timetolive", &id],
        vec!["lease", "revoke", &id],
        vec!["lease", "keep-alive", "--once", &id],
        vec!["lease", "grant", "1"],
        vec!["lease", "timetolive", "1234"],
        vec!["put", "lk3", "v", "--lease", "1234"],
        vec!["lease", "revoke", "1234"],
        vec!["lease", "grant", "7", "-w", "json"],
        vec!["lease", "timetolive", "1234", "-w", "json"],
        vec!["lease", "timetolive", "1234", "-w", "fields"],
        vec!["lease", "timetolive", "zz"],
        vec!["lease", "grant"],
        vec!["lease", "grant", "x"],
        vec!["lease", "revoke"],
        vec!["lease", "keep-alive"],
        vec!["lease", "keep-alive", "--once", "1234"],
    ] {
        let r = cli(server.as_dyn(), &args, None);
        // The remaining TTL may tick between the two servers: keep it out of the comparison.
        let stdout = r.stdout.replace("remaining(99s)", "remaining(100s)");
        let line = format!("{} => {} {} {}", args.join(" "), stdout, r.stderr, r.code);
        // A second grant gets a new ID: normalize any 16-hex-digit word.
        let line: String = line
            .split(' ')
            .map(|w| {
                if w.len() == 16 && w.chars().all(|c| c.is_ascii_hexdigit()) && w != "0000000000001234" {
                    "<ID2>".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        out.push(sort_attached_keys(&mask_json_ids(&normalize(&line, &id))));
    }
    out
}

/// etcd lists a lease's keys in Go map order (random); rkv in key order. Compare them sorted.
fn sort_attached_keys(text: &str) -> String {
    let Some(start) = text.find("attached keys([") else { return text.to_string() };
    let list_start = start + "attached keys([".len();
    let Some(len) = text[list_start..].find("])") else { return text.to_string() };
    let mut keys: Vec<&str> = text[list_start..list_start + len].split(' ').collect();
    keys.sort_unstable();
    format!("{}{}{}", &text[..list_start], keys.join(" "), &text[list_start + len..])
}

/// A fresh grant's decimal ID in JSON output: `"ID":123` becomes `"ID":<N>`.
fn mask_json_ids(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("\"ID\":") {
        let (head, tail) = rest.split_at(i + 5);
        out.push_str(head);
        let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
        out.push_str("<N>");
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

#[test]
fn rctl_lease_commands_print_like_etcdctl() {
    let (d1, d2) = (tempdir(), tempdir());
    let (a, b) = (Rkv::start(d1.path()), Rkv::start(d2.path()));
    let (e, r) = (session_with(&a, etcdctl), session_with(&b, common::rctl));
    for (x, y) in e.iter().zip(&r) {
        assert_eq!(y, x, "rctl (left) vs etcdctl (right)");
    }
    assert_eq!(e.len(), r.len());
}

#[test]
fn etcdctl_lease_commands_print_like_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let (e, r) = (lease_session(&etcd), lease_session(&rkv));
    for (a, b) in e.iter().zip(&r) {
        assert_eq!(b, a, "rkv (left) vs etcd (right)");
    }
    assert_eq!(e.len(), r.len());
}

/// Lease errors through the raw API, compared with etcd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_errors_match_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let mut results = Vec::new();
    for server in [&etcd as &dyn Server, &rkv] {
        let ch = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap_or_else(|e| panic!("{e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let mut l = LeaseClient::new(ch);
        let mut r = Vec::new();
        let grant = |id, ttl| LeaseGrantRequest { id, ttl };
        let ok = l.lease_grant(grant(77, 1)).await.map(|x| (x.get_ref().id, x.get_ref().ttl));
        r.push(format!("{ok:?}"));
        let dup =
            l.lease_grant(grant(77, 10)).await.map(|_| ()).map_err(|e| (e.code(), e.message().to_string()));
        r.push(format!("{dup:?}"));
        let big = l
            .lease_grant(grant(78, 9_000_000_001))
            .await
            .map(|_| ())
            .map_err(|e| (e.code(), e.message().to_string()));
        r.push(format!("{big:?}"));
        let missing = l
            .lease_revoke(LeaseRevokeRequest { id: 5 })
            .await
            .map(|_| ())
            .map_err(|e| (e.code(), e.message().to_string()));
        r.push(format!("{missing:?}"));
        let ttl = l
            .lease_time_to_live(LeaseTimeToLiveRequest { id: 5, keys: true })
            .await
            .map(|x| (x.get_ref().id, x.get_ref().ttl, x.get_ref().granted_ttl));
        r.push(format!("{:?}", ttl.map_err(|e| e.to_string())));
        results.push(r);
    }
    assert_eq!(results[1], results[0], "rkv (left) vs etcd (right)");
}

/// An expired lease deletes its keys: watchers get DELETE events with prev_kv, no key is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_deletes_attached_keys() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut l = LeaseClient::new(channel(&rkv).await);
    let mut kv = KvClient::new(channel(&rkv).await);
    let granted = Instant::now();
    let lease = l
        .lease_grant(LeaseGrantRequest { id: 0, ttl: 2 })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    for k in ["/e/a", "/e/b", "/e/c"] {
        let put = PutRequest { key: k.into(), value: b"v".to_vec(), lease: lease.id, ..Default::default() };
        kv.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let watch = WatchCreateRequest {
        key: b"/e/".to_vec(),
        range_end: b"/e0".to_vec(),
        prev_kv: true,
        ..Default::default()
    };
    let mut w = WatchConn::open_watching(&rkv, watch).await;
    let deletes = w.expect("DELETE events of the expiry").await;
    let expired_after = granted.elapsed();
    assert_eq!(deletes.events.len(), 3, "all keys of a lease go in one revision: {deletes:?}");
    let rev = deletes.events[0].kv.as_ref().map(|kv| kv.mod_revision);
    for ev in &deletes.events {
        assert_eq!(ev.r#type, EventType::Delete as i32);
        assert_eq!(ev.kv.as_ref().map(|kv| kv.mod_revision), rev);
        assert_eq!(ev.prev_kv.as_ref().map(|kv| kv.lease), Some(lease.id));
    }
    assert!(expired_after >= Duration::from_secs(2), "expired before its TTL: {expired_after:?}");
    let left = kv
        .range(RangeRequest { key: b"/e/".to_vec(), range_end: b"/e0".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left.into_inner().count, 0, "leaked lease keys");
    let ttl = l
        .lease_time_to_live(LeaseTimeToLiveRequest { id: lease.id, keys: false })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ttl.into_inner().ttl, -1);
}

/// Leases survive a crash with their keys; their TTL starts again from the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_survive_restart() {
    let dir = tempdir();
    let mut rkv = Rkv::start(dir.path());
    let mut l = LeaseClient::new(channel(&rkv).await);
    let mut kv = KvClient::new(channel(&rkv).await);
    let lease = l
        .lease_grant(LeaseGrantRequest { id: 42, ttl: 60 })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    let put =
        PutRequest { key: b"/rs/a".to_vec(), value: b"v".to_vec(), lease: lease.id, ..Default::default() };
    kv.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    rkv.kill9();
    rkv.restart();
    let mut l = LeaseClient::new(channel(&rkv).await);
    let ttl = l
        .lease_time_to_live(LeaseTimeToLiveRequest { id: 42, keys: true })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!((ttl.granted_ttl, ttl.keys.clone()), (60, vec![b"/rs/a".to_vec()]));
    assert!(ttl.ttl >= 58, "TTL renewed on restart: {ttl:?}");
    l.lease_revoke(LeaseRevokeRequest { id: 42 }).await.unwrap_or_else(|e| panic!("{e}"));
    let mut kv = KvClient::new(channel(&rkv).await);
    let left = kv
        .range(RangeRequest { key: b"/rs/a".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left.into_inner().count, 0);
}

/// The etcd-client crate's keep-alive stream keeps a lease alive past its TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_through_etcd_client() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut c = etcd_client::Client::connect([rkv.endpoint()], None).await.unwrap_or_else(|e| panic!("{e}"));
    let lease = c.lease_grant(2, None).await.unwrap_or_else(|e| panic!("{e}"));
    c.put("ka", "v", Some(etcd_client::PutOptions::new().with_lease(lease.id())))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut keeper, mut stream) = c.lease_keep_alive(lease.id()).await.unwrap_or_else(|e| panic!("{e}"));
    // Keep it alive for twice its TTL, one keep-alive per answered keep-alive.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        keeper.keep_alive().await.unwrap_or_else(|e| panic!("{e}"));
        let resp = stream
            .message()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("stream ended"));
        assert_eq!((resp.id(), resp.ttl()), (lease.id(), 2));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let got = c.get("ka", None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.count(), 1, "a kept-alive lease must not expire");
    let leases = c.leases().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leases.leases().iter().map(|l| l.id()).collect::<Vec<_>>(), vec![lease.id()]);
}
