//! The `rkv` binary's command line and the embed API.

mod common;

use std::process::Command;

use rkv_proto::etcdserverpb::{kv_client::KvClient, PutRequest, RangeRequest, RequestOp, TxnRequest};

use common::{tempdir, Rkv, Server};

fn rkv(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rkv")).args(args).output().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn version_and_unknown_flags() {
    let v = rkv(&["--version"]);
    assert!(v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("rkv Version: "));
    let bad = rkv(&["--no-such-flag=1"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("flag provided but not defined: -no-such-flag"),
        "{bad:?}"
    );
}

#[test]
fn a_data_dir_rkv_did_not_write_is_refused_untouched() {
    let dir = tempdir();
    let data = dir.path().join("other-data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.join("app.db"), b"mine").unwrap_or_else(|e| panic!("{e}"));
    let out =
        rkv(&["--data-dir", data.to_str().unwrap_or_default(), "--listen-client-urls=http://127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was not written by rkv"), "{out:?}");
    let entries: Vec<_> = std::fs::read_dir(&data).unwrap_or_else(|e| panic!("{e}")).collect();
    assert_eq!(entries.len(), 1, "the foreign data dir must not be modified");
    assert_eq!(std::fs::read(data.join("app.db")).unwrap_or_default(), b"mine");
}

/// An etcd data dir is taken over (tests/etcd_takeover.rs); one whose db is not a database is
/// refused with the reason, and left as it was.
#[test]
fn an_etcd_data_dir_with_a_broken_db_is_refused_untouched() {
    let dir = tempdir();
    let data = dir.path().join("etcd-data");
    std::fs::create_dir_all(data.join("member/snap")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(data.join("member/snap/db"), b"bolt").unwrap_or_else(|e| panic!("{e}"));
    let out =
        rkv(&["--data-dir", data.to_str().unwrap_or_default(), "--listen-client-urls=http://127.0.0.1:0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("taking over etcd data dir") && stderr.contains("member/snap/db: invalid database"),
        "{out:?}"
    );
    let entries: Vec<_> = std::fs::read_dir(&data).unwrap_or_else(|e| panic!("{e}")).collect();
    assert_eq!(entries.len(), 1, "the etcd data dir must not be modified");
    assert_eq!(std::fs::read(data.join("member/snap/db")).unwrap_or_default(), b"bolt");
}

/// kubeadm's etcd flags start rkv; the ones it does not use are logged; ETCD_* variables work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_flags_and_environment() {
    let dir = tempdir();
    // etcd's Go flag syntax: single dash, bool flags with =.
    std::env::set_var("ETCD_MAX_TXN_OPS", "2");
    let peer = format!("http://127.0.0.1:{}", common::free_port());
    let metrics = format!("--listen-metrics-urls=http://127.0.0.1:{}", common::free_port());
    let rkv = Rkv::start_with(
        dir.path(),
        &[
            "-name",
            "node-1",
            "--max-snapshots=10",
            "--max-concurrent-streams=100",
            "--client-cert-auth=true",
            "--peer-client-cert-auth=true",
            "--experimental-initial-corrupt-check=true",
            "--experimental-watch-progress-notify-interval=5s",
            &metrics,
            &format!("--initial-cluster=node-1={peer}"),
            &format!("--initial-advertise-peer-urls={peer}"),
            "--listen-peer-urls",
            &peer,
        ],
    );
    std::env::remove_var("ETCD_MAX_TXN_OPS");
    assert!(rkv.log_text().contains("etcd flag accepted but not used by rkv"));
    assert!(rkv.log_text().contains("--max-snapshots=10"));
    let mut kv = KvClient::new(common::channel(&rkv).await);
    let op = |k: &str| RequestOp {
        request: Some(rkv_proto::etcdserverpb::request_op::Request::RequestPut(PutRequest {
            key: k.as_bytes().to_vec(),
            ..Default::default()
        })),
    };
    let three = TxnRequest { compare: vec![], success: vec![op("a"), op("b"), op("c")], failure: vec![] };
    let e = kv.txn(three).await.expect_err("ETCD_MAX_TXN_OPS=2 must apply");
    assert_eq!(e.message(), "etcdserver: too many operations in txn request");
    let mut cluster =
        rkv_proto::etcdserverpb::cluster_client::ClusterClient::new(common::channel(&rkv).await);
    let members = cluster
        .member_list(rkv_proto::etcdserverpb::MemberListRequest::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(members.members[0].name, "node-1");
    assert_eq!(members.members[0].client_ur_ls, vec![rkv.url()]);
}

/// A member started in-process, like etcd's embed package; its data outlives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_member_starts_serves_and_stops() {
    let dir = tempdir();
    let config = rkv_server::Config::new(
        "embedded",
        dir.path().join("m"),
        "127.0.0.1:0".parse().unwrap_or_else(|_| panic!()),
    );
    let member = rkv_server::Member::start(config.clone()).await.unwrap_or_else(|e| panic!("start: {e}"));
    let url = format!("http://{}", member.client_addrs()[0]);
    let mut kv = KvClient::connect(url).await.unwrap_or_else(|e| panic!("{e}"));
    let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
    kv.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    member.stop().await;

    let member = rkv_server::Member::start(config).await.unwrap_or_else(|e| panic!("restart: {e}"));
    let url = format!("http://{}", member.client_addrs()[0]);
    let mut kv = KvClient::connect(url).await.unwrap_or_else(|e| panic!("{e}"));
    let got = kv
        .range(RangeRequest { key: b"k".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.into_inner().kvs[0].value, b"v");
    member.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_service_reports_serving() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let mut health = tonic_health::pb::health_client::HealthClient::new(common::channel(&rkv).await);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_inner();
    assert_eq!(resp.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
}

/// Periodic auto compaction with a 1s retention compacts away revisions older than a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_auto_compaction() {
    let dir = tempdir();
    let rkv =
        Rkv::start_with(dir.path(), &["--auto-compaction-mode=periodic", "--auto-compaction-retention=1s"]);
    let mut kv = KvClient::new(common::channel(&rkv).await);
    for i in 0..5 {
        let put = PutRequest { key: b"k".to_vec(), value: vec![i], ..Default::default() };
        kv.put(put).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let old = RangeRequest { key: b"k".to_vec(), revision: 2, ..Default::default() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match kv.range(old.clone()).await {
            Err(e) if e.message() == "etcdserver: mvcc: required revision has been compacted" => break,
            Ok(_) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
        assert!(std::time::Instant::now() < deadline, "no auto compaction within 30s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(rkv.log_text().contains("completed auto compaction"));
    // The newest value is never compacted away.
    let now = kv
        .range(RangeRequest { key: b"k".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(now.into_inner().kvs[0].value, vec![4]);
}

/// `--quota-backend-bytes`: writes over quota get etcd's "database space exceeded"; reads and
/// deletes still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_over_quota_are_refused() {
    let dir = tempdir();
    let rkv = Rkv::start_with(dir.path(), &["--quota-backend-bytes=1"]);
    let mut kv = KvClient::new(common::channel(&rkv).await);
    let e = kv
        .put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() })
        .await
        .expect_err("over quota");
    assert_eq!(
        (e.code(), e.message()),
        (tonic::Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded")
    );
    kv.range(RangeRequest { key: b"k".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let del = rkv_proto::etcdserverpb::DeleteRangeRequest { key: b"k".to_vec(), ..Default::default() };
    kv.delete_range(del).await.unwrap_or_else(|e| panic!("{e}"));
}

/// Over quota, a write raises etcd's NOSPACE alarm through the log: every write that adds data
/// is refused until `alarm disarm`, while reads, deletes and compaction go on. etcdctl 3.5 and
/// rctl list and disarm it alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nospace_alarm_holds_writes_until_disarmed() {
    use common::{etcdctl, rctl};
    let dir = tempdir();
    let rkv = Rkv::start_with(dir.path(), &["--quota-backend-bytes=65536"]);
    let big = "x".repeat(16 * 1024);
    let mut refused = None;
    for i in 0..400 {
        let put = etcdctl(&rkv, &["put", &format!("big/{i:03}"), &big], None);
        if put.code != 0 {
            refused = Some(put);
            break;
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("the quota was never reached"));
    assert_eq!(refused.stderr, "Error: etcdserver: mvcc: database space exceeded\n", "{refused:?}");
    let listed = etcdctl(&rkv, &["alarm", "list"], None);
    let id = u64::from_str_radix(&rkv_member_id(&rkv), 16).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.stdout, format!("memberID:{id} alarm:NOSPACE \n"), "{listed:?}");
    assert_eq!(listed, rctl(&rkv, &["alarm", "list"], None));
    // Small writes are refused too while the alarm is active; deletes and reads are not.
    let small = etcdctl(&rkv, &["put", "small", "1"], None);
    assert_eq!(small.stderr, "Error: etcdserver: mvcc: database space exceeded\n", "{small:?}");
    let status = etcdctl(&rkv, &["endpoint", "status", "-w", "json"], None);
    assert!(status.stdout.contains("alarm:NOSPACE"), "{status:?}");
    let health = common::http_get(&rkv, "/health");
    assert!(
        health.starts_with("HTTP/1.1 503")
            && health.ends_with(r#"{"health":"false","reason":"ALARM NOSPACE"}"#),
        "{health}"
    );
    let del = etcdctl(&rkv, &["del", "big/", "--prefix"], None);
    assert_eq!(del.code, 0, "{del:?}");
    let rev = etcdctl(&rkv, &["get", "big/000", "-w", "json"], None);
    let rev =
        rev.stdout.split("\"revision\":").nth(1).and_then(|r| r.split(',').next()).unwrap_or("0").to_string();
    assert_eq!(etcdctl(&rkv, &["compaction", "--physical", &rev], None).code, 0);
    assert_eq!(etcdctl(&rkv, &["defrag"], None).code, 0);
    let disarmed = rctl(&rkv, &["alarm", "disarm"], None);
    assert_eq!(disarmed.stdout, format!("memberID:{id} alarm:NOSPACE \n"), "{disarmed:?}");
    assert_eq!(etcdctl(&rkv, &["alarm", "list"], None).stdout, "");
    let after = etcdctl(&rkv, &["put", "small", "1"], None);
    assert_eq!(after.code, 0, "writes resume once disarmed and back under quota: {after:?}");
}

fn rkv_member_id(rkv: &Rkv) -> String {
    let status = common::etcdctl(rkv, &["endpoint", "status"], None);
    status.stdout.split(", ").nth(1).unwrap_or_default().to_string()
}
