//! Data portability with etcd 3.5, 3.6 and 3.7: etcd's snapshot files and the `member/snap/db` of a
//! stopped etcd restored into rkv with `rctl snapshot restore`, and rkv's snapshots restored into
//! etcd with etcd's own `etcdutl snapshot restore`. Each side is observed through the etcdctl of
//! the release compared with and the observations compared field by field: the keys at every
//! revision from the compaction on (with create and mod revisions, versions and leases), the
//! compaction error below it, HashKV, leases with their TTLs and keys, users, roles and the auth
//! switch and revision, and the revision the next write gets. Every test runs against etcd 3.5
//! (PATH), then etcd 3.6 (`RKV_ETCD36_BIN`) and etcd 3.7 (`RKV_ETCD37_BIN`, see `EtcdTools::each`).

mod common;

use std::path::Path;

use common::portability::*;
use common::{rctl, tempdir, CliRun, Etcd, EtcdTools, Rkv, Server};
use serde_json::Value;

fn snapshot_save(t: &EtcdTools, s: &dyn Server, file: &Path) {
    ok(t, s, &[ROOT, "snapshot", "save", &file.display().to_string()], None);
}

/// etcdutl's and rctl's `snapshot status -w json` of one file agree; returns etcdutl's answer
/// and, from etcdutl 3.6, the storage version it also prints. rctl answers as etcdutl 3.5 does;
/// etcdutl 3.6 and 3.7 differ in two fields, compared no further here:
/// - `version`: the file's storage version (the meta bucket's `storageVersion`), which rctl
///   does not print;
/// - `totalKey`: etcdutl 3.6 and 3.7 count the keys live at the file's revision, etcdutl 3.5 and rctl
///   count the entries of all buckets.
fn assert_same_status(t: &EtcdTools, file: &Path) -> (Value, Option<Value>) {
    let path = file.display().to_string();
    let want = t.etcdutl(&["snapshot", "status", &path, "-w", "json"]);
    assert_eq!(want.code, 0, "{want:?}");
    let got = rctl(&common::Url(NO_SERVER.into()), &["snapshot", "status", &path, "-w", "json"], None);
    assert_eq!(got.code, 0, "{got:?}");
    let mut want: Value =
        serde_json::from_str(want.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {want:?}"));
    let mut got: Value = serde_json::from_str(got.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {got:?}"));
    let mut version = None;
    if let (Value::Object(want), Value::Object(got), true) = (&mut want, &mut got, t.at_least_36()) {
        version = Some(
            want.remove("version").unwrap_or_else(|| panic!("etcdutl {} prints a version: {want:?}", t.name)),
        );
        for m in [want, got] {
            m.remove("totalKey").unwrap_or_else(|| panic!("no totalKey: {m:?}"));
        }
    }
    assert_eq!(got, want, "snapshot status of {path} ({})", t.name);
    (want, version)
}

/// `etcdutl snapshot restore` of `file` into the data dir of a member named `default` at
/// `peer`, which must succeed.
fn etcdutl_restore(t: &EtcdTools, file: &Path, data_dir: &Path, peer: &str, extra: &[&str]) {
    let (file, data, cluster) =
        (file.display().to_string(), data_dir.display().to_string(), format!("default={peer}"));
    let mut args = vec!["snapshot", "restore", &file, "--data-dir", &data];
    args.extend_from_slice(&["--initial-cluster", &cluster, "--initial-advertise-peer-urls", peer]);
    args.extend_from_slice(extra);
    let restore = t.etcdutl(&args);
    assert_eq!(restore.code, 0, "{restore:?}");
}

fn rctl_restore(file: &Path, data_dir: &Path, extra: &[&str]) -> CliRun {
    let mut args = vec!["snapshot", "restore"];
    let (file, data) = (file.display().to_string(), data_dir.display().to_string());
    args.extend_from_slice(&[&file, "--data-dir", &data]);
    args.extend_from_slice(extra);
    rctl(&common::Url(NO_SERVER.into()), &args, None)
}

/// etcd 3.6 and 3.7 stamp their backend with their storage version (3.6.0, 3.7.0) right after
/// they start (long before the workload's snapshot), so their halves restore a file that
/// carries a `storageVersion`.
fn assert_etcd_storage_version(t: &EtcdTools, version: Option<Value>) {
    if let Some(v) = version {
        let want = if t.is_v37() { "3.7.0" } else { "3.6.0" };
        assert_eq!(v, want, "storage version of {}'s snapshot", t.name);
    }
}

/// etcd's snapshot, restored by rctl: rkv serves exactly what etcd served.
#[test]
fn etcd_snapshot_restores_into_rkv_with_every_revision() {
    EtcdTools::each(etcd_snapshot_restores_into_rkv);
}

fn etcd_snapshot_restores_into_rkv(t: &EtcdTools) {
    let dir = tempdir();
    let etcd = Etcd::start_by(t, dir.path(), &[], |_, _| {});
    let lease = workload(t, &etcd);
    let file = dir.path().join("etcd.snap");
    snapshot_save(t, &etcd, &file);
    let (status, version) = assert_same_status(t, &file);
    assert!(status["revision"].as_i64() > Some(COMPACT_AT), "{status}");
    assert_etcd_storage_version(t, version);

    let rkv_dir = dir.path().join("rkv");
    let run = rctl_restore(&file, &rkv_dir.join("data"), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let rkv = Rkv::start(&rkv_dir);
    assert_same(&observe(t, &rkv, &lease), &observe(t, &etcd, &lease));
    assert_eq!(next_write(t, &rkv), next_write(t, &etcd));
}

/// rkv's snapshot (saved with etcdctl), checked and restored by etcd's own etcdutl: etcd
/// serves exactly what rkv served.
#[test]
fn rkv_snapshot_restores_into_etcd_with_every_revision() {
    EtcdTools::each(rkv_snapshot_restores_into_etcd);
}

fn rkv_snapshot_restores_into_etcd(t: &EtcdTools) {
    let dir = tempdir();
    let rkv_dir = dir.path().join("rkv");
    std::fs::create_dir_all(&rkv_dir).unwrap_or_else(|e| panic!("{e}"));
    let rkv = Rkv::start(&rkv_dir);
    let lease = workload(t, &rkv);
    let file = dir.path().join("rkv.snap");
    snapshot_save(t, &rkv, &file);
    // rkv writes its snapshots as etcd 3.5 lays them out: no storage version.
    let (_, version) = assert_same_status(t, &file);
    assert!(version.is_none() || version == Some(Value::from("")), "{version:?}");
    let etcd = Etcd::start_by(t, dir.path(), &[], |data, peer| etcdutl_restore(t, &file, data, peer, &[]));
    assert_same(&observe(t, &etcd, &lease), &observe(t, &rkv, &lease));
    assert_eq!(next_write(t, &etcd), next_write(t, &rkv));
}

/// A stopped etcd's `member/snap/db` has no hash trailer: like etcdutl, rctl wants
/// --skip-hash-check for it, and then restores all of it.
#[test]
fn member_db_of_a_stopped_etcd_restores_with_skip_hash_check() {
    EtcdTools::each(member_db_restores_with_skip_hash_check);
}

fn member_db_restores_with_skip_hash_check(t: &EtcdTools) {
    let dir = tempdir();
    let etcd = Etcd::start_by(t, dir.path(), &[], |_, _| {});
    let lease = workload(t, &etcd);
    let seen = observe(t, &etcd, &lease);
    etcd.stop();
    let db = Etcd::data_dir(dir.path()).join("member/snap/db");

    let refused = rctl_restore(&db, &dir.path().join("refused"), &[]);
    let etcd_refused = t.etcdutl(&[
        "snapshot",
        "restore",
        &db.display().to_string(),
        "--data-dir",
        &dir.path().join("etcd-refused").display().to_string(),
    ]);
    assert_eq!((refused.code, etcd_refused.code), (1, 1), "{refused:?} {etcd_refused:?}");
    for run in [&refused, &etcd_refused] {
        assert!(run.stderr.contains("snapshot missing hash but --skip-hash-check=false"), "{run:?}");
    }
    assert!(!dir.path().join("refused").exists());

    let rkv_dir = dir.path().join("rkv");
    let run = rctl_restore(&db, &rkv_dir.join("data"), &["--skip-hash-check"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rkv = Rkv::start(&rkv_dir);
    assert_same(&observe(t, &rkv, &lease), &seen);
}

/// `--bump-revision N --mark-compacted` (etcdutl 3.6 and 3.7): the restored member continues N
/// revisions past the file's newest, and everything before that is compacted, so watchers and
/// caches holding the old revisions start over. With etcd 3.6 and 3.7, etcd restored by its own etcdutl
/// with the same flags answers the same.
#[test]
fn bump_revision_and_mark_compacted() {
    EtcdTools::each(bump_revision_and_mark_compacted_against);
}

fn bump_revision_and_mark_compacted_against(t: &EtcdTools) {
    let dir = tempdir();
    let etcd = Etcd::start_by(t, dir.path(), &[], |_, _| {});
    workload(t, &etcd);
    let file = dir.path().join("etcd.snap");
    snapshot_save(t, &etcd, &file);
    let newest = assert_same_status(t, &file).0["revision"].as_i64().unwrap_or_default();

    // etcdutl 3.6 and 3.7 take the two flags only together, refused as bad arguments.
    let alone_dir = dir.path().join("alone").display().to_string();
    for flags in [&["--mark-compacted"][..], &["--bump-revision", "10"]] {
        let alone = rctl_restore(&file, Path::new(&alone_dir), flags);
        assert_eq!(alone.code, 128, "{alone:?}");
        assert_eq!(alone.stderr, "Error: --mark-compacted required if --revision-bump > 0\n", "{alone:?}");
        assert!(!Path::new(&alone_dir).exists());
        if t.at_least_36() {
            let mut args =
                vec!["snapshot", "restore", file.to_str().unwrap_or_default(), "--data-dir", &alone_dir];
            args.extend_from_slice(flags);
            let etcdutl = t.etcdutl(&args);
            assert_eq!((etcdutl.code, etcdutl.stderr.as_str()), (alone.code, alone.stderr.as_str()));
        }
    }

    let rkv_dir = dir.path().join("rkv");
    let run = rctl_restore(&file, &rkv_dir.join("data"), &["--bump-revision", "1000", "--mark-compacted"]);
    assert_eq!(run.code, 0, "{run:?}");
    let rkv = Rkv::start(&rkv_dir);
    let now = json(t, &rkv, &["get", "k/", "--prefix"]);
    assert_eq!(now["header"]["revision"].as_i64(), Some(newest + 1000), "{now}");
    assert_eq!(now["kvs"], json(t, &etcd, &["get", "k/", "--prefix"])["kvs"]);
    let old = t.etcdctl(&rkv, &[ROOT, "get", "k/01", "--rev", &newest.to_string()], None);
    assert_eq!(old.code, 1, "{old:?}");
    assert!(old.stderr.contains("required revision has been compacted"), "{old:?}");

    // etcdutl 3.5.1 has no --bump-revision; 3.6's and 3.7's do the same restore into etcd.
    if t.at_least_36() {
        let bumped_dir = dir.path().join("bumped");
        let bumped = Etcd::start_by(t, &bumped_dir, &[], |data, peer| {
            etcdutl_restore(t, &file, data, peer, &["--bump-revision", "1000", "--mark-compacted"])
        });
        assert_eq!(now, json(t, &bumped, &["get", "k/", "--prefix"]), "bumped keys and revision");
        let etcd_old = t.etcdctl(&bumped, &[ROOT, "get", "k/01", "--rev", &newest.to_string()], None);
        assert_eq!(old, etcd_old, "a read below the bumped compaction");
        let hash = |s: &dyn Server| {
            let v = json(t, s, &["endpoint", "hashkv"]);
            serde_json::json!([v[0]["HashKV"]["hash"], v[0]["HashKV"]["compact_revision"]])
        };
        assert_eq!(hash(&rkv), hash(&bumped), "HashKV (hash, compact revision) after the bump");
        assert_eq!(next_write(t, &bumped).as_i64(), Some(newest + 1001));
    }
    assert_eq!(next_write(t, &rkv).as_i64(), Some(newest + 1001));
}

/// Damaged and foreign files: a clear error naming the file, no data dir left behind, never a
/// panic.
#[test]
fn bad_snapshot_files_are_refused_without_a_trace() {
    EtcdTools::each(bad_snapshot_files_are_refused);
}

fn bad_snapshot_files_are_refused(t: &EtcdTools) {
    let dir = tempdir();
    let etcd = Etcd::start_by(t, dir.path(), &[], |_, _| {});
    workload(t, &etcd);
    let file = dir.path().join("etcd.snap");
    snapshot_save(t, &etcd, &file);
    let good = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
    let body = &good[..good.len() - 32];
    let mut flipped = body.to_vec();
    // Inside both meta pages (bbolt falls back to the other one when only one is damaged) and
    // inside a data page.
    flipped[64] ^= 0x10;
    flipped[4096 + 64] ^= 0x10;
    // bbolt checksums only its meta pages: a flip inside a value is caught by the SHA-256
    // trailer alone (below), a flip in the page structure by the reader.
    let mut flipped_data = body.to_vec();
    for page in flipped_data.chunks_mut(4096).skip(2) {
        page[8] ^= 0x07;
    }
    let mut wrong_magic = body.to_vec();
    wrong_magic[16..20].copy_from_slice(b"RKV!");
    wrong_magic[4096 + 16..4096 + 20].copy_from_slice(b"RKV!");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated", body[..body.len() / 2].to_vec()),
        ("meta-flipped", flipped),
        ("page-flags-flipped", flipped_data),
        ("wrong-magic", wrong_magic),
        ("text", b"this is not a database\n".repeat(300)),
        ("foreign-bbolt", foreign_bbolt()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(format!("{name}.db"));
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join(format!("{name}-restored"));
        let run = rctl_restore(&path, &out, &["--skip-hash-check"]);
        assert_eq!(run.code, 1, "{name}: {run:?}");
        assert!(
            run.stderr.contains(&path.display().to_string()),
            "{name}: the error names the file: {run:?}"
        );
        assert!(!run.stderr.contains("panicked"), "{name}: {run:?}");
        assert!(!out.exists(), "{name}: nothing is left behind");
        let status =
            rctl(&common::Url(NO_SERVER.into()), &["snapshot", "status", &path.display().to_string()], None);
        assert_eq!(status.code, 1, "{name}: {status:?}");
        assert!(!status.stderr.contains("panicked"), "{name}: {status:?}");
    }
    // With its trailer, a damaged file fails the hash check as etcdutl's does.
    let mut damaged = good.clone();
    damaged[5 * 4096] ^= 1;
    let path = dir.path().join("damaged.snap");
    std::fs::write(&path, &damaged).unwrap_or_else(|e| panic!("{e}"));
    let run = rctl_restore(&path, &dir.path().join("damaged"), &[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("expected sha256 ["), "{run:?}");

    // A file that is not there, or is a directory: etcdutl's words and exit code.
    let missing = dir.path().join("missing.db").display().to_string();
    let a_dir = dir.path().display().to_string();
    let last = |run: &CliRun| run.stderr.lines().last().unwrap_or_default().to_string();
    for path in [&missing, &a_dir] {
        let out = dir.path().join("never").display().to_string();
        for args in
            [vec!["snapshot", "status", path.as_str()], vec!["snapshot", "restore", path, "--data-dir", &out]]
        {
            let ours = rctl(&common::Url(NO_SERVER.into()), &args, None);
            let theirs = t.etcdutl(&args);
            if path == &a_dir && args[1] == "status" && t.at_least_36() {
                // etcdutl 3.6 and 3.7 say only "invalid database" here; 3.5's words are kept.
                assert_eq!(ours.code, theirs.code, "{args:?}: {ours:?}");
                continue;
            }
            assert_eq!((ours.code, last(&ours)), (theirs.code, last(&theirs)), "{args:?}");
        }
    }

    // A data dir that is not empty is refused with etcdutl's words; an empty one is used.
    let taken = dir.path().join("taken");
    std::fs::create_dir_all(&taken).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(taken.join("keep"), b"x").unwrap_or_else(|e| panic!("{e}"));
    let ours = rctl_restore(&file, &taken, &[]);
    let taken_arg = taken.display().to_string();
    let theirs = t.etcdutl(&["snapshot", "restore", &file.display().to_string(), "--data-dir", &taken_arg]);
    assert_eq!((ours.code, last(&ours)), (theirs.code, last(&theirs)));
    assert_eq!(last(&ours), format!("Error: data-dir {taken_arg:?} not empty or could not be read"));
    assert!(taken.join("keep").exists());
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap_or_else(|e| panic!("{e}"));
    // Owner-only, as etcd and rkv require of a data dir.
    let private = <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700);
    std::fs::set_permissions(&empty, private).unwrap_or_else(|e| panic!("{e}"));
    let run = rctl_restore(&file, &empty, &[]);
    assert_eq!(run.code, 0, "{run:?}");
}

/// A valid bbolt file that is not etcd's: one bucket of another application.
fn foreign_bbolt() -> Vec<u8> {
    let mut w =
        rkv_bbolt::Writer::new(std::io::Cursor::new(Vec::new()), 4096).unwrap_or_else(|e| panic!("{e}"));
    w.bucket(b"images").unwrap_or_else(|e| panic!("{e}"));
    w.put(b"alpine", b"sha256:0").unwrap_or_else(|e| panic!("{e}"));
    let (out, _) = w.finish().unwrap_or_else(|e| panic!("{e}"));
    out.into_inner()
}
