//! Taking over a stopped etcd member's data dir in place: rkv started with etcd's flags and
//! data dir imports `member/snap/db` and replays the committed WAL entries after the db's
//! consistent index, then serves exactly what etcd served, without changing etcd's files.
//! Every test runs against etcd 3.5 (PATH), then etcd 3.6 (`RKV_ETCD36_BIN`) and etcd 3.7
//! (`RKV_ETCD37_BIN`): their dbs also carry a `storageVersion` in the meta bucket; their WALs
//! are laid out as 3.5's.

mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use common::portability::*;
use common::{rctl, tempdir, Etcd, EtcdTools, Rkv};

/// Every file under `dir` and a digest of its bytes.
fn digest_tree(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let mut h = std::collections::hash_map::DefaultHasher::new();
                bytes.hash(&mut h);
                out.insert(path, (bytes.len() as u64, h.finish()));
            }
        }
    }
    out
}

/// rkv, not started yet, on `data_dir` with the flags the etcd member there was started with.
fn rkv_for(dir: &Path, data_dir: &Path, peer_url: &str) -> Rkv {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let mut rkv = Rkv::new(
        dir,
        &[
            &format!("--initial-advertise-peer-urls={peer_url}"),
            &format!("--initial-cluster=default={peer_url}"),
        ],
    );
    rkv.data_dir = data_dir.to_path_buf();
    rkv
}

/// rkv serving on `data_dir`, started with etcd's flags and `extra` ones.
fn rkv_on(dir: &Path, data_dir: &Path, peer_url: &str, extra: &[&str]) -> Rkv {
    let mut rkv = rkv_for(dir, data_dir, peer_url);
    rkv.extra_args.extend(extra.iter().map(|a| a.to_string()));
    let offset = rkv.launch();
    rkv.wait_ready(offset);
    rkv
}

/// rkv started on `data_dir`, which it must refuse: its log.
fn rkv_refusing(dir: &Path, data_dir: &Path, peer_url: &str) -> String {
    let mut rkv = rkv_for(dir, data_dir, peer_url);
    rkv.launch();
    let status = rkv.child.as_mut().and_then(|c| c.wait().ok()).unwrap_or_else(|| panic!("rkv did not exit"));
    assert!(!status.success(), "rkv started on {}:\n{}", data_dir.display(), rkv.log_text());
    rkv.log_text()
}
/// A kill -9'd etcd whose backend was never committed after its first writes (a one-hour batch
/// interval keeps what it acknowledged in the WAL only): rkv serves everything etcd
/// acknowledged, with etcd's member ID, leaves etcd's files untouched, and imports only once.
#[test]
fn killed_etcd_data_dir_is_taken_over_in_place() {
    EtcdTools::each(killed_etcd_data_dir_is_taken_over);
}

fn killed_etcd_data_dir_is_taken_over(t: &EtcdTools) {
    let dir = tempdir();
    let batching = ["--backend-batch-interval=1h", "--backend-batch-limit=1000000"];
    let etcd = Etcd::start_by(t, dir.path(), &batching, |_, _| {});
    let lease = workload(t, &etcd);
    for i in 0..20 {
        json(t, &etcd, &["put", &format!("tail/{i}"), "after auth"]);
    }
    let seen = observe(t, &etcd, &lease);
    let member = json(t, &etcd, &["endpoint", "status"])[0]["Status"]["leader"].clone();
    let peer_url = etcd.peer_url.clone();
    drop(etcd); // SIGKILL
    let data = Etcd::data_dir(dir.path());
    let db = data.join("member/snap/db").display().to_string();
    let db_status = rctl(&common::Url(NO_SERVER.into()), &["snapshot", "status", &db, "-w", "json"], None);
    assert_eq!(db_status.code, 0, "{db_status:?}");
    let db_rev: serde_json::Value =
        serde_json::from_str(db_status.stdout.trim()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        db_rev["revision"].as_i64() < Some(seen.current),
        "the db must lag the WAL for the replay to be tested: {db_rev} vs {}",
        seen.current
    );
    let before = digest_tree(&data.join("member"));

    let mut rkv = rkv_on(&dir.path().join("rkv"), &data, &peer_url, &[]);
    assert!(rkv.log_text().contains("took over the stopped etcd member"), "{}", rkv.log_text());
    assert_same(&observe(t, &rkv, &lease), &seen);
    let status = json(t, &rkv, &["endpoint", "status"]);
    assert_eq!(status[0]["Status"]["leader"], member, "rkv keeps etcd's member ID");
    assert_eq!(digest_tree(&data.join("member")), before, "etcd's files are unchanged");

    // From now on the data dir is rkv's: a restart opens rkv's store, no second import.
    let next = next_write(t, &rkv);
    rkv.stop();
    let offset = rkv.launch();
    rkv.wait_ready(offset);
    assert_eq!(rkv.log_text().matches("took over the stopped etcd member").count(), 1);
    let after = json(t, &rkv, &["get", "after/restore"]);
    assert_eq!(after["kvs"][0]["mod_revision"], next, "{after}");
}

/// A data dir whose db cannot be read is refused with an error naming it, and nothing is
/// written into it; once the db is whole again the takeover goes through, over the remains of
/// an interrupted one.
#[test]
fn takeover_of_a_damaged_db_writes_nothing() {
    EtcdTools::each(takeover_of_a_damaged_db);
}

fn takeover_of_a_damaged_db(t: &EtcdTools) {
    let dir = tempdir();
    let etcd = Etcd::start_by(t, dir.path(), &[], |_, _| {});
    ok(t, &etcd, &["put", "a", "1"], None);
    let peer_url = etcd.peer_url.clone();
    etcd.stop();
    let data = Etcd::data_dir(dir.path());
    // Damage the db's meta pages: rkv must refuse and write nothing.
    let db = data.join("member/snap/db");
    let good = std::fs::read(&db).unwrap_or_else(|e| panic!("{e}"));
    let mut bad = good.clone();
    bad[16] ^= 0xff;
    bad[4096 + 16] ^= 0xff;
    std::fs::write(&db, &bad).unwrap_or_else(|e| panic!("{e}"));
    let before = digest_tree(&data);
    let log = rkv_refusing(&dir.path().join("rkv"), &data, &peer_url);
    assert!(log.contains("taking over etcd data dir") && log.contains("member/snap/db"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(digest_tree(&data), before, "nothing written into a dir that could not be taken over");

    // With the db repaired, the import goes through, even over what an import cut short (a
    // crash, a full disk) left: a store whose bulk load never finished, and no marker.
    std::fs::write(&db, &good).unwrap_or_else(|e| panic!("{e}"));
    {
        let leftover = rkv_storage::Store::open(data.join("db")).unwrap_or_else(|e| panic!("{e}"));
        let mut load = leftover.bulk_load().unwrap_or_else(|e| panic!("{e}"));
        let kv = rkv_proto::mvccpb::KeyValue {
            key: b"half".to_vec(),
            create_revision: 2,
            mod_revision: 2,
            version: 1,
            ..Default::default()
        };
        load.history(rkv_storage::Revision::new(2, 0), false, &prost::Message::encode_to_vec(&kv))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Started as etcd members often are, with --initial-cluster-state existing, which etcd
    // ignores once its data dir exists: so does the takeover.
    let rkv = rkv_on(&dir.path().join("rkv2"), &data, &peer_url, &["--initial-cluster-state=existing"]);
    assert!(rkv.log_text().contains("removing the store of an interrupted takeover"), "{}", rkv.log_text());
    assert_eq!(ok(t, &rkv, &["get", "a", "--print-value-only"], None), "1\n");
    assert_eq!(ok(t, &rkv, &["get", "half", "--print-value-only"], None), "");
}

/// rkv pointed at the data dir of an etcd that is still running refuses it (etcd holds its db
/// locked) and writes nothing there.
#[test]
fn a_running_etcd_is_not_taken_over() {
    EtcdTools::each(running_etcd_is_not_taken_over);
}

fn running_etcd_is_not_taken_over(t: &EtcdTools) {
    let dir = tempdir();
    let etcd = Etcd::start_by(t, dir.path(), &[], |_, _| {});
    ok(t, &etcd, &["put", "a", "1"], None);
    let data = Etcd::data_dir(dir.path());
    let before: Vec<_> = std::fs::read_dir(&data).unwrap_or_else(|e| panic!("{e}")).collect();
    let log = rkv_refusing(&dir.path().join("rkv"), &data, &etcd.peer_url);
    assert!(log.contains("etcd is still running on it"), "{log}");
    let after: Vec<_> = std::fs::read_dir(&data).unwrap_or_else(|e| panic!("{e}")).collect();
    assert_eq!(after.len(), before.len(), "nothing written beside etcd's files");
    assert_eq!(ok(t, &etcd, &["get", "a", "--print-value-only"], None), "1\n", "etcd serves on");
}
