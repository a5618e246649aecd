//! Real etcdctl 3.5 against rkv and against etcd 3.5: the same commands print the same.
//! And rctl against etcdctl: the same commands, same output, same exit codes.

mod common;

use common::{etcdctl, rctl, tempdir, CliRun, Etcd, Rkv, Server};

/// (arguments, stdin): put / get / del / txn / compaction in etcdctl's syntax, valid and not.
fn session() -> Vec<(Vec<&'static str>, Option<&'static str>)> {
    let cmds: Vec<(&str, Option<&str>)> = vec![
        ("put k1 v1", None),
        ("put k2 hello --prev-kv", None),
        ("put k2 v2 --prev-kv -w json", None),
        ("put k3 x -w fields", None),
        ("put k3 --prev-kv -w fields --ignore-value", None),
        ("put k4", Some("from stdin")),
        ("get k --prefix", None),
        ("get k --prefix -w json", None),
        ("get k --prefix -w fields", None),
        ("get k --prefix --keys-only", None),
        ("get k --prefix --keys-only -w json", None),
        ("get k --prefix --print-value-only", None),
        ("get k --prefix --count-only", None),
        ("get k --prefix --count-only -w fields", None),
        ("get k --prefix --limit 1 -w json", None),
        ("get k --prefix --sort-by=MODIFY --order=DESCEND", None),
        ("get k --prefix --sort-by=VALUE --order=ASCEND -w json", None),
        ("get k --prefix --sort-by=bogus", None),
        ("get k1 k3", None),
        ("get --prefix \"\"", None),
        ("get k --from-key --rev 2", None),
        ("get k --rev 99999", None),
        ("get k --prefix --consistency=s", None),
        ("get k --consistency=x", None),
        ("get k --prefix --from-key", None),
        ("get", None),
        ("put", None),
        ("del", None),
        ("get k --prefix -w table", None),
        ("put k1 v1 --lease=1234", None),
        ("put k1 v1 --lease=zz", None),
        ("put k1 --ignore-value --prev-kv -w json", None),
        ("put nokey --ignore-value", None),
        ("txn", Some("mod(\"k1\") > \"0\"\n\nput c 3\nget k1\ndel k2 --prev-kv\n\nget k2\n\n")),
        (
            "txn -w json",
            Some("value(\"k1\") = \"v1\"\nversion(\"c\") = \"1\"\n\nget --prefix k\n\nput x y\n\n"),
        ),
        ("txn -w fields", Some("value(\"zz\") = \"1\"\n\nget k1\n\nput x \"y z\"\nget x\n\n")),
        ("txn", Some("create(\"k1\") = \"0\"\n\n\n\n")),
        ("txn", Some("mod(k1) > 0\n\n\n\n")),
        ("txn", Some("mod(\"k1\") > \"0\"\n")),
        ("txn", Some("\nput a 1\nput a 2\n\n\n")),
        ("txn", Some("\nbogus a 1\n\n\n")),
        ("del k1 --prev-kv", None),
        ("del k --prefix --prev-kv -w json", None),
        ("del nothing -w fields", None),
        ("compaction 2", None),
        ("compaction 2", None),
        ("compaction abc", None),
        ("compaction 999999", None),
        ("compaction 5 --physical", None),
        ("get k --rev 3", None),
        ("get x -w json", None),
    ];
    cmds.into_iter().map(|(c, stdin)| (split(c), stdin)).collect()
}

/// Splits a command line the way a shell would for these simple cases ("" is an empty arg).
fn split(line: &'static str) -> Vec<&'static str> {
    let mut out = Vec::new();
    for word in line.split(' ') {
        out.push(if word == "\"\"" { "" } else { word });
    }
    out
}

/// A command-line client (`etcdctl` or `rctl`) run against a server.
type Cli = fn(&dyn Server, &[&str], Option<&str>) -> CliRun;

/// Runs the session with each (name, client, server) and compares every command's output.
fn compare_sessions(
    (a_name, a, a_server): (&str, Cli, &dyn Server),
    (b_name, b, b_server): (&str, Cli, &dyn Server),
) {
    let mut mismatches = Vec::new();
    for (args, stdin) in session() {
        let (ra, rb) = (a(a_server, &args, stdin), b(b_server, &args, stdin));
        if ra != rb {
            mismatches.push(format!(
                "`{}` (stdin {stdin:?}):\n  {a_name}: {ra:?}\n  {b_name}: {rb:?}",
                args.join(" ")
            ));
        }
    }
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}

#[test]
fn etcdctl_prints_the_same_against_rkv_as_against_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    compare_sessions(("etcd", etcdctl, &etcd), ("rkv", etcdctl, &rkv));
}

#[test]
fn rctl_prints_what_etcdctl_prints() {
    let (d1, d2) = (tempdir(), tempdir());
    let for_etcdctl = Rkv::start(d1.path());
    let for_rctl = Rkv::start(d2.path());
    compare_sessions(("etcdctl", etcdctl, &for_etcdctl), ("rctl", rctl, &for_rctl));
}

/// Endpoint status differs where the servers differ (version, database size, raft index:
/// docs/compatibility.md); everything else in etcdctl's table is the same.
#[test]
fn endpoint_status_and_health_through_etcdctl() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let columns = |s: &dyn Server| -> Vec<String> {
        let run = etcdctl_dyn(s, &["endpoint", "status"]);
        assert_eq!(run.code, 0, "{run:?}");
        let cols: Vec<String> = run.stdout.trim_end_matches('\n').split(", ").map(String::from).collect();
        assert_eq!(cols.len(), 10, "{run:?}");
        // endpoint, id, is leader, is learner, raft term, errors
        vec![cols[1].clone(), cols[4].clone(), cols[5].clone(), cols[6].clone(), cols[9].clone()]
    };
    assert_eq!(columns(&etcd), columns(&rkv));
    let table = etcdctl(&rkv, &["endpoint", "status", "-w", "table"], None);
    let id = columns(&etcd)[0].clone();
    assert!(table.stdout.contains(&format!("| {id} |")), "{table:?}");
    assert!(table.stdout.contains("|  3.5.21 |"), "{table:?}");

    for s in [&etcd as &dyn Server, &rkv] {
        let run = etcdctl_dyn(s, &["endpoint", "health"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("is healthy: successfully committed proposal"), "{run:?}");
    }
    let rctl_health = rctl(&rkv, &["endpoint", "health", "-w", "json"], None);
    assert!(rctl_health
        .stdout
        .starts_with(&format!("[{{\"endpoint\":\"{}\",\"health\":true,", rkv.endpoint())));
    let rctl_status = rctl(&rkv, &["endpoint", "status"], None);
    assert_eq!(
        rctl_status.stdout.split(", ").nth(1),
        etcdctl(&rkv, &["endpoint", "status"], None).stdout.split(", ").nth(1)
    );
}

#[test]
fn endpoint_health_fails_for_a_dead_endpoint() {
    let port = common::free_port();
    let dead = DeadServer(port);
    let e = etcdctl(&dead, &["endpoint", "health", "--command-timeout=1s"], None);
    let r = rctl(&dead, &["endpoint", "health", "--command-timeout=1s"], None);
    assert_eq!((e.code, r.code), (1, 1));
    assert!(r.stderr.contains("is unhealthy: failed to commit proposal: context deadline exceeded"), "{r:?}");
    assert!(r.stderr.ends_with("Error: unhealthy cluster\n"), "{r:?}");
}

struct DeadServer(u16);

impl Server for DeadServer {
    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.0)
    }
}

fn etcdctl_dyn(s: &dyn Server, args: &[&str]) -> CliRun {
    struct Ep(String);
    impl Server for Ep {
        fn endpoint(&self) -> String {
            self.0.clone()
        }
    }
    etcdctl(&Ep(s.endpoint()), args, None)
}

/// etcdctl defrag and endpoint hashkv work against rkv as against etcd (hashes equal for the
/// same history).
#[test]
fn defrag_and_hashkv_through_etcdctl() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let mut outs = Vec::new();
    for s in [&etcd as &dyn Server, &rkv] {
        for args in [["put", "a", "1"], ["put", "b", "2"], ["put", "a", "3"]] {
            assert_eq!(etcdctl(s, &args, None).code, 0);
        }
        assert_eq!(etcdctl(s, &["compaction", "3", "--physical"], None).code, 0);
        let defrag = etcdctl(s, &["defrag"], None);
        assert_eq!(defrag.code, 0, "{defrag:?}");
        let hash = etcdctl(s, &["endpoint", "hashkv", "-w", "json"], None);
        assert_eq!(hash.code, 0, "{hash:?}");
        let json: serde_json::Value =
            serde_json::from_str(&hash.stdout).unwrap_or_else(|e| panic!("{e}: {hash:?}"));
        let h = &json[0]["HashKV"];
        outs.push((
            defrag.stdout.replace(&s.endpoint(), "EP"),
            h["hash"].clone(),
            h["compact_revision"].clone(),
        ));
    }
    assert_eq!(outs[1], outs[0], "rkv (left) vs etcd (right)");
    for args in [
        &["defrag"][..],
        &["endpoint", "hashkv"],
        &["endpoint", "hashkv", "--rev=3"],
        &["endpoint", "hashkv", "-w", "json"],
    ] {
        assert_eq!(
            rctl(&rkv, args, None),
            etcdctl(&rkv, args, None),
            "rctl (left) vs etcdctl (right): {args:?}"
        );
    }
    let dead = DeadServer(common::free_port());
    let args = ["defrag", "--command-timeout=1s"];
    let (r, e) = (rctl(&dead, &args, None), etcdctl(&dead, &args, None));
    assert_eq!((r.code, r.stdout.as_str()), (e.code, e.stdout.as_str()));
    assert!(r.stderr.starts_with(&format!("Failed to defragment etcd member[{}]", dead.endpoint())), "{r:?}");
}

/// `member list` of a single member: the same as etcd's (client URLs aside), and rctl prints
/// what etcdctl prints in every format.
#[test]
fn member_list_like_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    for w in ["simple", "json", "table", "fields"] {
        let args = ["member", "list", "-w", w];
        let on_etcd = etcdctl(&etcd, &args, None);
        let on_rkv = etcdctl(&rkv, &args, None);
        let normalize = |r: &CliRun, s: &dyn Server| r.stdout.replace(&s.url(), "URL");
        assert_eq!(normalize(&on_rkv, &rkv), normalize(&on_etcd, &etcd), "member list -w {w}");
        assert_eq!(rctl(&rkv, &args, None), on_rkv, "rctl (left) vs etcdctl (right): -w {w}");
    }
}

/// `snapshot save` through etcdctl 3.5 and through rctl write the same file: etcd's database
/// format followed by etcd's SHA-256 trailer over it.
#[test]
fn snapshot_save_with_etcdctl_and_rctl() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    for i in 0..50 {
        let put = etcdctl(&rkv, &["put", &format!("s/{i:02}"), &"v".repeat(i * 100)], None);
        assert_eq!(put.code, 0, "{put:?}");
    }
    let by_etcdctl = dir.path().join("etcdctl.snap");
    let by_rctl = dir.path().join("rctl.snap");
    let saved = etcdctl(&rkv, &["snapshot", "save", &by_etcdctl.display().to_string()], None);
    assert_eq!(saved.code, 0, "{saved:?}");
    assert_eq!(saved.stdout, format!("Snapshot saved at {}\n", by_etcdctl.display()));
    let saved = rctl(&rkv, &["snapshot", "save", &by_rctl.display().to_string()], None);
    assert_eq!(saved.code, 0, "{saved:?}");
    assert_eq!(saved.stdout, format!("Snapshot saved at {}\n", by_rctl.display()));
    let (a, b) =
        (std::fs::read(&by_etcdctl).unwrap_or_default(), std::fs::read(&by_rctl).unwrap_or_default());
    assert!(a.len() > 5000 && a == b, "same state, same file ({} vs {} bytes)", a.len(), b.len());
    // A whole number of bbolt pages, then the trailer: what etcdutl takes for a snapshot.
    assert_eq!(a.len() % 4096, 32);
    assert!(!dir.path().join("rctl.snap.part").exists());
    // rctl snapshot status reads either file: the same hash, revision 51 (50 puts), records, and
    // the database's size without the trailer, as etcdutl reports it.
    let status = rctl(&rkv, &["snapshot", "status", &by_etcdctl.display().to_string(), "-w", "json"], None);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        status.stdout.contains("\"revision\":51,")
            && status.stdout.contains(&format!("\"totalSize\":{}}}", a.len() - 32)),
        "{status:?}"
    );
    let simple = rctl(&rkv, &["snapshot", "status", &by_rctl.display().to_string()], None);
    let fields: Vec<&str> = simple.stdout.trim_end().split(", ").collect();
    assert_eq!(fields.len(), 4, "{simple:?}");
    assert_eq!(fields[1], "51", "{simple:?}");
    let table = rctl(&rkv, &["snapshot", "status", &by_rctl.display().to_string(), "-w", "table"], None);
    assert!(
        table.stdout.contains(" HASH ") && table.stdout.contains(&format!("| {} |", fields[0])),
        "{table:?}"
    );
    let broken = dir.path().join("broken.snap");
    std::fs::write(&broken, &a[..a.len() / 2]).unwrap_or_else(|e| panic!("{e}"));
    let refused = rctl(&rkv, &["snapshot", "status", &broken.display().to_string()], None);
    assert_eq!(refused.code, 1, "{refused:?}");
    // What etcdctl saved, rctl restores (etcd's defaults for name and URLs).
    let restored_dir = dir.path().join("restored");
    std::fs::create_dir_all(&restored_dir).unwrap_or_else(|e| panic!("{e}"));
    let data = restored_dir.join("data").display().to_string();
    let run =
        rctl(&rkv, &["snapshot", "restore", &by_etcdctl.display().to_string(), "--data-dir", &data], None);
    assert_eq!(run.code, 0, "{run:?}");
    let restored = Rkv::start_with(&restored_dir, &[]);
    let count = etcdctl(&restored, &["get", "s/", "--prefix", "--count-only", "-w", "fields"], None);
    assert!(count.stdout.contains("\"Count\" : 50"), "{count:?}");
    assert_eq!(
        etcdctl(&restored, &["get", "s/49", "--print-value-only"], None).stdout,
        format!("{}\n", "v".repeat(4900))
    );
    // One endpoint only, as etcdctl requires.
    let two = format!("{},{}", rkv.endpoint(), rkv.endpoint());
    let args = ["--endpoints", two.as_str(), "snapshot", "save", "x.db"];
    let (want, got) = (etcdctl(&rkv, &args, None), rctl(&rkv, &args, None));
    assert_eq!(want.code, 5, "{want:?}");
    assert_eq!(want, got);
}
