//! Moving data between etcd and rkv at scale, beside etcd's own tools in one run: restore of a
//! 1M-key etcd snapshot (`rctl snapshot restore` against `etcdutl snapshot restore` on the same
//! file), then a snapshot save of the restored 1M keys (`etcdctl snapshot save` from rkv and
//! from etcd). Time and peak RSS of each, and the rkv/etcd ratios.
//!
//! `cargo bench --bench portability` (release build). `RKV_BENCH_KEYS` sets the key count
//! (default 1,000,000; values of 256 bytes). The snapshot is written in etcd's format by
//! rkv-bbolt (a bbolt db with etcd's buckets, one revision per key, as a load of puts leaves
//! it); both tools restore it with `--skip-hash-check`, as a `member/snap/db` copy.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prost::Message;
use rkv_proto::mvccpb::KeyValue;

use common::{etcdctl, tempdir, Etcd, Rkv, Server};

/// Time and peak resident memory of one command (GNU time's "Maximum resident set size").
struct Run {
    elapsed: Duration,
    peak_rss_kib: u64,
}

fn timed(program: &str, args: &[&str]) -> Run {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("/usr/bin/time {program}: {e}"));
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{program} {args:?} failed:\n{stderr}");
    let peak_rss_kib = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes): "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in:\n{stderr}"));
    Run { elapsed, peak_rss_kib }
}

/// An etcd 3.5 database with `keys` keys (revisions 2..), as etcd's buckets hold them.
fn write_etcd_db(path: &Path, keys: usize) {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let mut w = rkv_bbolt::Writer::new(file, 4096).unwrap_or_else(|e| panic!("{e}"));
    let put = |w: &mut rkv_bbolt::Writer<std::fs::File>, k: &[u8], v: &[u8]| {
        w.put(k, v).unwrap_or_else(|e| panic!("{e}"));
    };
    for bucket in [&b"alarm"[..], b"auth", b"authRoles", b"authUsers", b"cluster", b"key"] {
        w.bucket(bucket).unwrap_or_else(|e| panic!("{e}"));
        match bucket {
            b"auth" => {
                put(&mut w, b"authEnabled", &[0]);
                put(&mut w, b"authRevision", &1u64.to_be_bytes());
            }
            b"cluster" => put(&mut w, b"clusterVersion", b"3.5.0"),
            _ => {}
        }
    }
    for i in 0..keys {
        let rev = i as i64 + 2;
        let kv = KeyValue {
            key: format!("/bench/{i:08}").into_bytes(),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
            value: vec![b'v'; 256],
            lease: 0,
        };
        let mut k = Vec::with_capacity(17);
        k.extend_from_slice(&(rev as u64).to_be_bytes());
        k.push(b'_');
        k.extend_from_slice(&0u64.to_be_bytes());
        put(&mut w, &k, &kv.encode_to_vec());
    }
    for bucket in [&b"lease"[..], b"members", b"members_removed", b"meta"] {
        w.bucket(bucket).unwrap_or_else(|e| panic!("{e}"));
    }
    put(&mut w, b"consistent_index", &(keys as u64 + 1).to_be_bytes());
    put(&mut w, b"term", &2u64.to_be_bytes());
    w.finish().unwrap_or_else(|e| panic!("{e}"));
}

/// Time of `etcdctl snapshot save` from a server, and the server's resident memory before
/// and at its highest during the save (sampled every 20 ms).
fn save(server: &dyn Server, pid: u32, out: &Path) -> (Duration, u64, u64) {
    let before = common::rss_kib(pid);
    let started = Instant::now();
    let mut child = Command::new("etcdctl")
        .arg(format!("--endpoints={}", server.endpoint()))
        .args(["snapshot", "save", &out.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut peak = before;
    let status = loop {
        peak = peak.max(common::rss_kib(pid));
        if let Some(status) = child.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "snapshot save from {}", server.endpoint());
    (started.elapsed(), before, peak)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One round's figures, rkv's and etcd's side by side: (name, unit, rkv, etcd).
type Round = Vec<(&'static str, &'static str, f64, f64)>;

/// Restores `db` with rctl and with etcdutl under `dir`, starts both members, saves a snapshot
/// from each.
fn round(db: &Path, dir: &Path, keys: usize) -> Round {
    let db_arg = db.display().to_string();
    let rkv_data = dir.join("rkv").join("data");
    std::fs::create_dir_all(dir.join("rkv")).unwrap_or_else(|e| panic!("{e}"));
    let rkv_restore = timed(
        env!("CARGO_BIN_EXE_rctl"),
        &["snapshot", "restore", &db_arg, "--skip-hash-check", "--data-dir", &rkv_data.display().to_string()],
    );
    let mut etcd_restore = None;
    let etcd = Etcd::start_prepared(dir, &[], |data, peer| {
        let cluster = format!("default={peer}");
        let data = data.display().to_string();
        etcd_restore = Some(timed(
            "etcdutl",
            &[
                "snapshot",
                "restore",
                &db_arg,
                "--skip-hash-check",
                "--data-dir",
                &data,
                "--initial-cluster",
                &cluster,
                "--initial-advertise-peer-urls",
                peer,
            ],
        ));
    });
    let etcd_restore = etcd_restore.unwrap_or_else(|| panic!("etcd was not restored"));
    let rkv = Rkv::start(&dir.join("rkv"));
    for server in [&rkv as &dyn Server, &etcd] {
        let count = etcdctl(server, &["get", "/bench/", "--prefix", "--count-only", "-w", "fields"], None);
        assert!(count.stdout.contains(&format!("\"Count\" : {keys}")), "{count:?}");
    }
    let rkv_pid = rkv.child.as_ref().map(|c| c.id()).unwrap_or_else(|| panic!("rkv is not running"));
    let (rkv_save, rkv_before, rkv_peak) = save(&rkv, rkv_pid, &dir.join("rkv.snap"));
    let (etcd_save, etcd_before, etcd_peak) = save(&etcd, etcd.pid(), &dir.join("etcd.snap"));
    vec![
        ("restore time", "s", rkv_restore.elapsed.as_secs_f64(), etcd_restore.elapsed.as_secs_f64()),
        ("restore peak RSS", "MiB", mib(rkv_restore.peak_rss_kib), mib(etcd_restore.peak_rss_kib)),
        ("snapshot save time", "s", rkv_save.as_secs_f64(), etcd_save.as_secs_f64()),
        (
            "server RSS growth during the save",
            "MiB",
            mib(rkv_peak.saturating_sub(rkv_before)),
            mib(etcd_peak.saturating_sub(etcd_before)),
        ),
        ("server RSS before the save", "MiB", mib(rkv_before), mib(etcd_before)),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let keys: usize = std::env::var("RKV_BENCH_KEYS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    let rounds: usize =
        std::env::var("RKV_BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let dir = tempdir();
    let db = dir.path().join("etcd.db");
    let started = Instant::now();
    write_etcd_db(&db, keys);
    let size = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    println!(
        "etcd snapshot of {keys} keys: {:.1} MiB, written in {:.1?}",
        size as f64 / 1048576.0,
        started.elapsed()
    );
    let results: Vec<Round> = (0..rounds)
        .map(|i| {
            let round_dir = dir.path().join(format!("round-{i}"));
            std::fs::create_dir_all(&round_dir).unwrap_or_else(|e| panic!("{e}"));
            let figures = round(&db, &round_dir, keys);
            // Each round's data dirs go, so the disk holds one round at a time.
            let _ = std::fs::remove_dir_all(&round_dir);
            figures
        })
        .collect();
    println!("| {keys} keys, median of {rounds} (min-max) | rkv | etcd 3.5 | rkv/etcd |");
    println!("|---|---|---|---|");
    for (i, (what, unit, _, _)) in results[0].iter().enumerate() {
        let rkv: Vec<f64> = results.iter().map(|r| r[i].2).collect();
        let etcd: Vec<f64> = results.iter().map(|r| r[i].3).collect();
        let ratios: Vec<f64> = results.iter().map(|r| r[i].2 / r[i].3.max(0.01)).collect();
        let span = |v: &[f64]| {
            let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
            format!("({lo:.2}-{hi:.2})")
        };
        println!(
            "| {what} | {:.2} {unit} {} | {:.2} {unit} {} | {:.2}x {} |",
            median(rkv.clone()),
            span(&rkv),
            median(etcd.clone()),
            span(&etcd),
            median(ratios.clone()),
            span(&ratios)
        );
    }
}
