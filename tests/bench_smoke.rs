//! The benchmark tool's smoke mode: every workload of benches/load, tiny, against rkv and a
//! real etcd 3.5, 1 and 3 members, so that the tool keeps working. It checks that each
//! workload completed without errors, never how fast.

#[path = "../benches/load/mod.rs"]
mod load;

use load::{footprint, Deployment, Kind, Workload};

async fn smoke(kind: Kind, members: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut d = Deployment::start(kind, dir.path(), members);
    d.wait_ready().await;
    let channels = d.channels().await;
    for (i, w) in Workload::all().iter().enumerate() {
        let s = w.run(&channels, 200, &format!("w{i}")).await;
        assert_eq!(s.errors, 0, "{} x{members}: {}", kind.name(), w.name());
        assert!(s.ops > 0 && !s.latencies.is_empty(), "{} x{members}: {} did nothing", kind.name(), w.name());
    }
    let f = footprint(&mut d, 300).await;
    assert!(f.rss > 0 && f.data > 0, "{} x{members}: no footprint", kind.name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_against_rkv_and_etcd() {
    for members in [1, 3] {
        for kind in [Kind::Rkv, Kind::Etcd] {
            smoke(kind, members).await;
        }
    }
}
