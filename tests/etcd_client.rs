//! The third-party `etcd-client` crate (an independent etcd v3 client) against rkv.

mod common;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
};

use common::{tempdir, Rkv, Server};

async fn client(rkv: &Rkv) -> Client {
    Client::connect([rkv.endpoint()], None).await.unwrap_or_else(|e| panic!("connect: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_through_etcd_client() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut c = client(&rkv).await;

    let put = c.put("/registry/pods/a", "1", None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(put.header().map(|h| h.revision()), Some(2));
    c.put("/registry/pods/b", "2", None).await.unwrap_or_else(|e| panic!("{e}"));
    let prev = c
        .put("/registry/pods/a", "3", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prev.prev_key().map(|kv| kv.value()), Some(&b"1"[..]));

    let list = c
        .get("/registry/pods/", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(list.count(), 2);
    let a = &list.kvs()[0];
    assert_eq!(
        (a.key(), a.value(), a.create_revision(), a.mod_revision(), a.version()),
        (&b"/registry/pods/a"[..], &b"3"[..], 2, 4, 2)
    );

    let keys = c
        .get(
            "/registry/",
            Some(
                GetOptions::new()
                    .with_prefix()
                    .with_keys_only()
                    .with_limit(1)
                    .with_sort(SortTarget::Mod, SortOrder::Descend),
            ),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(keys.kvs()[0].key(), b"/registry/pods/a");
    assert!(keys.kvs()[0].value().is_empty());
    assert!(keys.more());

    // kube-apiserver's optimistic concurrency: update only if mod_revision is unchanged.
    let txn = Txn::new()
        .when([Compare::mod_revision("/registry/pods/a", CompareOp::Equal, 4)])
        .and_then([TxnOp::put("/registry/pods/a", "4", None)])
        .or_else([TxnOp::get("/registry/pods/a", None)]);
    let t = c.txn(txn.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(t.succeeded());
    let t = c.txn(txn).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!t.succeeded(), "the second update must see a newer mod_revision");

    let old = c
        .get("/registry/pods/a", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.kvs()[0].value(), b"1");
    c.compact(4, None).await.unwrap_or_else(|e| panic!("{e}"));
    let gone = c.get("/registry/pods/a", Some(GetOptions::new().with_revision(2))).await;
    let msg = gone.expect_err("revision 2 is compacted").to_string();
    assert!(msg.contains("etcdserver: mvcc: required revision has been compacted"), "{msg}");

    let del = c
        .delete("/registry/pods/", Some(DeleteOptions::new().with_prefix().with_prev_key()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(del.deleted(), 2);
    assert_eq!(del.prev_kvs().len(), 2);

    let status = c.status().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.version(), "3.5.21");
    assert_eq!(status.leader(), status.header().map_or(0, |h| h.member_id()));
    let members = c.member_list().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(members.members().len(), 1);
}
