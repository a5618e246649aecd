//! Durability: every acknowledged write survives kill -9; restarts keep data, revision and the
//! compaction point.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rkv_proto::etcdserverpb::{kv_client::KvClient, CompactionRequest, PutRequest, RangeRequest};

use common::{assert_acknowledged_writes_present, channel, tempdir, Acked, Rkv};

async fn range_all(
    rkv: &Rkv,
    revision: i64,
) -> Result<rkv_proto::etcdserverpb::RangeResponse, tonic::Status> {
    let mut kv = KvClient::new(channel(rkv).await);
    kv.range(RangeRequest { key: vec![0], range_end: vec![0], revision, ..Default::default() })
        .await
        .map(|r| r.into_inner())
}

/// One round: 8 writers put distinct keys as fast as they can and record each acknowledged
/// (key, revision); the server is killed with SIGKILL once `kill_after` puts were acknowledged.
async fn write_until_killed(rkv: &mut Rkv, round: usize, kill_after: usize) -> Vec<Acked> {
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut kv = KvClient::new(channel(rkv).await);
        let (acked, stop) = (acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("r{round}/w{w}/{i:06}");
                let put =
                    PutRequest { key: key.clone().into_bytes(), value: b"v".to_vec(), ..Default::default() };
                match kv.put(put).await {
                    Ok(resp) => {
                        let rev = resp.into_inner().header.map_or(0, |h| h.revision);
                        acked.lock().unwrap_or_else(|e| e.into_inner()).push((key, rev));
                    }
                    Err(_) => return,
                }
                i += 1;
            }
        }));
    }
    // Kill once enough writes have been acknowledged (awaited, not slept).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap_or_else(|e| e.into_inner()).len() < kill_after {
        assert!(std::time::Instant::now() < deadline, "writes are not being acknowledged");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    rkv.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    acked
}

/// Three rounds of writes cut by kill -9 at different points: after each restart every write
/// acknowledged in any round is there with its revision, and revisions only go forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_puts_survive_kill_9() {
    let dir = tempdir();
    let mut rkv = Rkv::start(dir.path());
    let mut acked = Vec::new();
    let mut last_rev = 0;
    for (round, kill_after) in [150usize, 500, 900].into_iter().enumerate() {
        acked.extend(write_until_killed(&mut rkv, round, kill_after).await);
        let max_acked = acked.iter().map(|(_, r)| *r).max().unwrap_or(0);
        rkv.restart();
        assert_acknowledged_writes_present(&rkv, &acked, &format!("round {round}, after kill -9")).await;
        let all = range_all(&rkv, 0).await.unwrap_or_else(|e| panic!("range after restart: {e}"));
        let rev = all.header.map_or(0, |h| h.revision);
        assert!(rev >= max_acked && rev >= last_rev, "revision went back: {rev} < {max_acked} or {last_rev}");
        last_rev = rev;
    }

    // Revisions continue after the last restart.
    let mut kv = KvClient::new(channel(&rkv).await);
    let next = kv
        .put(PutRequest { key: b"after".to_vec(), value: b"x".to_vec(), ..Default::default() })
        .await
        .unwrap_or_else(|e| panic!("put after restart: {e}"))
        .into_inner();
    assert_eq!(next.header.map(|h| h.revision), Some(last_rev + 1));
    println!(
        "kill -9: 3 rounds, {} acknowledged puts, 0 lost, revision {last_rev} -> {}",
        acked.len(),
        last_rev + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_data_revision_and_compaction_point() {
    let dir = tempdir();
    let mut rkv = Rkv::start(dir.path());
    let mut kv = KvClient::new(channel(&rkv).await);
    for i in 0..10 {
        let put = PutRequest {
            key: format!("k{}", i % 3).into_bytes(),
            value: format!("v{i}").into_bytes(),
            ..Default::default()
        };
        kv.put(put).await.unwrap_or_else(|e| panic!("put: {e}"));
    }
    kv.compact(CompactionRequest { revision: 6, physical: true })
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    let before = range_all(&rkv, 0).await.unwrap_or_else(|e| panic!("{e}"));
    let at_7 = range_all(&rkv, 7).await.unwrap_or_else(|e| panic!("{e}"));

    // A clean stop (SIGTERM), then a crash, then a clean start: the state is the same each time.
    let status = rkv.stop();
    assert!(status.success(), "rkv did not exit cleanly on SIGTERM: {status}");
    assert!(rkv.log_text().contains("stopped serving client requests"));
    rkv.restart();
    assert_eq!(range_all(&rkv, 0).await.unwrap_or_else(|e| panic!("{e}")).kvs, before.kvs);
    rkv.kill9();
    rkv.restart();
    let after = range_all(&rkv, 0).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after.kvs, before.kvs);
    assert_eq!(after.header.map(|h| h.revision), before.header.map(|h| h.revision));
    assert_eq!(range_all(&rkv, 7).await.unwrap_or_else(|e| panic!("{e}")).kvs, at_7.kvs);
    let compacted = range_all(&rkv, 5).await.expect_err("revision 5 is compacted");
    assert_eq!(compacted.code(), tonic::Code::OutOfRange);
    assert_eq!(compacted.message(), "etcdserver: mvcc: required revision has been compacted");
    let mut kv = KvClient::new(channel(&rkv).await);
    let again =
        kv.compact(CompactionRequest { revision: 6, physical: false }).await.expect_err("already compacted");
    assert_eq!(again.message(), "etcdserver: mvcc: required revision has been compacted");
}
