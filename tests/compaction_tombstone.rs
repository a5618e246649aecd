//! A delete at exactly the compacted revision stays in the history: a watch from that revision
//! starts with it, before and after a restart, and HashKV is the same as etcd's. This is etcd
//! issue 18089, fixed in etcd 3.6 (a compaction keeps such a tombstone) and 3.5.18 (a restart
//! restores it into the index); etcd 3.5.1, rkv's first reference, drops it after a restart,
//! so the reference here is etcd 3.6 and 3.7.

mod common;

use rkv_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, CompactionRequest, DeleteRangeRequest,
    HashKvRequest, PutRequest,
};
use rkv_proto::mvccpb::event::EventType;

use common::watch::WatchConn;
use common::{channel, tempdir, Etcd, EtcdTools, Rkv, Server};

const KEY: &[u8] = b"k1";

/// put k1, delete k1 (revision D), put k1, compact at D; returns D.
async fn delete_then_compact_at_it(server: &impl Server) -> i64 {
    let mut kv = KvClient::new(channel(server).await);
    let put = |value: &str| PutRequest { key: KEY.to_vec(), value: value.into(), ..Default::default() };
    kv.put(put("v1")).await.unwrap_or_else(|e| panic!("put: {e}"));
    let deleted = kv
        .delete_range(DeleteRangeRequest { key: KEY.to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"))
        .into_inner();
    assert_eq!(deleted.deleted, 1);
    let at = deleted.header.map(|h| h.revision).unwrap_or_else(|| panic!("no header"));
    kv.put(put("v2")).await.unwrap_or_else(|e| panic!("put: {e}"));
    kv.compact(CompactionRequest { revision: at, physical: true })
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    at
}

/// What a watch of k1 from `from` gets first: (event type, mod revision) of each event of its
/// first response with events.
async fn first_events(server: &impl Server, from: i64) -> Vec<(EventType, i64)> {
    let mut watch = WatchConn::open(server).await;
    watch
        .create(rkv_proto::etcdserverpb::WatchCreateRequest {
            key: KEY.to_vec(),
            start_revision: from,
            ..Default::default()
        })
        .await;
    loop {
        let resp = watch.expect("a watch response").await;
        assert!(!resp.canceled, "watch from {from} canceled: {resp:?}");
        if !resp.events.is_empty() {
            return resp
                .events
                .iter()
                .map(|e| (e.r#type(), e.kv.as_ref().map_or(0, |kv| kv.mod_revision)))
                .collect();
        }
    }
}

async fn hash_kv(server: &impl Server) -> (u32, i64) {
    let mut m = MaintenanceClient::new(channel(server).await);
    let h =
        m.hash_kv(HashKvRequest { revision: 0 }).await.unwrap_or_else(|e| panic!("hashkv: {e}")).into_inner();
    (h.hash, h.compact_revision)
}

/// What a server shows: the first events from D before a restart, after it, and HashKV.
type Seen = (Vec<(EventType, i64)>, Vec<(EventType, i64)>, (u32, i64));

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_at_the_compacted_revision_is_still_watched_from_it() {
    let dir = tempdir();
    let mut rkv = Rkv::start(dir.path());
    let at = delete_then_compact_at_it(&rkv).await;
    let before = first_events(&rkv, at).await;
    rkv.stop();
    rkv.restart();
    let seen: Seen = (before, first_events(&rkv, at).await, hash_kv(&rkv).await);
    let want = vec![(EventType::Delete, at), (EventType::Put, at + 1)];
    assert_eq!(seen.0, want, "rkv, before a restart");
    assert_eq!(seen.1, want, "rkv, after a restart");

    let references: Vec<EtcdTools> = [EtcdTools::v36(), EtcdTools::v37()].into_iter().flatten().collect();
    if references.len() < 2 {
        assert!(std::env::var_os("CI").is_none(), "CI must provide etcd 3.6 and 3.7 (scripts/test.sh)");
        eprintln!("etcd 3.6 or 3.7 missing: rkv compared with what is there");
    }
    for tools in references {
        let dir = tempdir();
        let etcd = Etcd::start_by(&tools, dir.path(), &[], |_, _| {});
        let etcd_at = delete_then_compact_at_it(&etcd).await;
        assert_eq!(etcd_at, at, "{}: the same operations give the same revisions", tools.name);
        let before = first_events(&etcd, at).await;
        etcd.stop();
        let etcd = Etcd::start_by(&tools, dir.path(), &[], |_, _| {});
        let etcd_seen: Seen = (before, first_events(&etcd, at).await, hash_kv(&etcd).await);
        assert_eq!(seen, etcd_seen, "rkv and {} (events before and after a restart, HashKV)", tools.name);
    }
}
