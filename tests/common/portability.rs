//! What a client can see of a server's data, observed through etcdctl and the etcd-client
//! crate, for comparisons of rkv and etcd after moving data between them (etcd's snapshots and
//! data dirs into rkv, rkv's snapshots into etcd). Both servers are observed with the etcdctl of
//! the etcd release they are compared with (`EtcdTools`).

use serde_json::Value;

use super::{EtcdTools, Server};

pub const ROOT: &str = "--user=root:rootpw";
/// Offline commands (restore, status) talk to no server.
pub const NO_SERVER: &str = "127.0.0.1:1";
/// The workload compacts at this revision.
pub const COMPACT_AT: i64 = 20;

pub fn ok(t: &EtcdTools, s: &dyn Server, args: &[&str], stdin: Option<&str>) -> String {
    let run = t.etcdctl(s, args, stdin);
    assert_eq!(run.code, 0, "etcdctl ({}) {args:?} on {}: {run:?}", t.name, s.endpoint());
    run.stdout
}

pub fn json(t: &EtcdTools, s: &dyn Server, args: &[&str]) -> Value {
    let mut all = vec![ROOT, "-w", "json"];
    all.extend_from_slice(args);
    let out = ok(t, s, &all, None);
    let mut v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    drop_member_ids(&mut v);
    v
}

/// Headers name the member that answered; the data is what is compared.
pub fn drop_member_ids(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for id in ["cluster_id", "member_id", "raft_term"] {
                map.remove(id);
            }
            map.values_mut().for_each(drop_member_ids);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_member_ids),
        _ => {}
    }
}

/// The same operations on either server: overwrites, deletes, a txn of several changes in one
/// revision, a lease with two keys, a compaction, more changes after it, then users and roles
/// and auth switched on. Returns the lease's ID (hex).
pub fn workload(t: &EtcdTools, s: &dyn Server) -> String {
    for i in 0..16 {
        ok(t, s, &["put", &format!("k/{:02}", i % 12), &format!("v{i}")], None);
    }
    ok(t, s, &["del", "k/03"], None);
    ok(t, s, &["del", "k/1", "--prefix"], None);
    ok(t, s, &["txn"], Some("\nput t/a 1\nput t/b 2\ndel k/00\n\n\n"));
    let grant = ok(t, s, &["lease", "grant", "900"], None);
    let lease = grant.split_whitespace().nth(1).unwrap_or_else(|| panic!("{grant}")).to_string();
    ok(t, s, &["put", "--lease", &lease, "l/1", "x"], None);
    ok(t, s, &["put", "--lease", &lease, "l/2", "y"], None);
    ok(t, s, &["compaction", &COMPACT_AT.to_string()], None);
    for i in 0..5 {
        ok(t, s, &["put", &format!("k/{i:02}"), "after"], None);
    }
    ok(t, s, &["del", "t/a"], None);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["role", "add", "root"],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "alice:alicepw"],
        &["role", "add", "reader"],
        &["role", "grant-permission", "reader", "read", "k/", "--prefix"],
        &["user", "grant-role", "alice", "reader"],
        &["auth", "enable"],
    ] {
        ok(t, s, args, None);
    }
    lease
}

/// What a client can see of a server's data.
#[derive(Debug)]
pub struct Observed {
    pub current: i64,
    /// `get --prefix ""` at every revision from the compaction to the current one.
    ranges: Vec<Value>,
    below_compaction: (i32, String),
    hashes: Vec<Value>,
    leases: Value,
    lease_keys: Value,
    auth: Value,
    users: Vec<Value>,
    roles: Vec<Value>,
    /// Every event from the compaction on, through the etcd Go client's Rust sibling.
    events: Vec<String>,
}

/// The events of a watch of every key from just after the compaction, with previous values,
/// up to the current revision.
pub fn history_events(s: &dyn Server, current: i64) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let opts = etcd_client::ConnectOptions::new().with_user("root", "rootpw");
        let mut client = etcd_client::Client::connect([s.endpoint()], Some(opts))
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        let options = etcd_client::WatchOptions::new()
            .with_all_keys()
            .with_start_revision(COMPACT_AT + 1)
            .with_prev_key();
        let (_watcher, mut stream) =
            client.watch("", Some(options)).await.unwrap_or_else(|e| panic!("watch: {e}"));
        let mut events = Vec::new();
        let mut last = 0;
        while last < current {
            let resp =
                stream.message().await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|| panic!("closed"));
            for ev in resp.events() {
                last = ev.kv().map(|kv| kv.mod_revision()).unwrap_or_else(|| panic!("{ev:?}"));
                events.push(format!("{:?} {:?} prev={:?}", ev.event_type(), ev.kv(), ev.prev_kv()));
            }
        }
        events
    })
}

pub fn observe(t: &EtcdTools, s: &dyn Server, lease: &str) -> Observed {
    let now = json(t, s, &["get", "", "--prefix"]);
    let current = now["header"]["revision"].as_i64().unwrap_or_else(|| panic!("{now}"));
    assert!(current > COMPACT_AT + 5, "{now}");
    let ranges = (COMPACT_AT..=current)
        .map(|r| json(t, s, &["get", "", "--prefix", "--rev", &r.to_string()]))
        .collect();
    let below = t.etcdctl(s, &[ROOT, "get", "", "--prefix", "--rev", &(COMPACT_AT - 1).to_string()], None);
    let hashes = [COMPACT_AT + 1, current - 3, current]
        .iter()
        .map(|r| {
            let v = json(t, s, &["endpoint", "hashkv", "--rev", &r.to_string()]);
            let hkv = &v[0]["HashKV"];
            serde_json::json!([hkv["hash"], hkv["compact_revision"], hkv["header"]["revision"]])
        })
        .collect();
    let mut ttl = json(t, s, &["lease", "timetolive", lease, "--keys"]);
    // What is left of the TTL depends on when each server started counting, and etcd lists a
    // lease's keys in no particular order.
    if let Value::Object(m) = &mut ttl {
        m.remove("ttl");
        if let Some(Value::Array(keys)) = m.get_mut("keys") {
            keys.sort_by_key(|k| k.to_string());
        }
    }
    Observed {
        current,
        ranges,
        below_compaction: (below.code, below.stderr),
        hashes,
        leases: json(t, s, &["lease", "list"]),
        lease_keys: ttl,
        auth: json(t, s, &["auth", "status"]),
        users: ["root", "alice"].iter().map(|u| json(t, s, &["user", "get", u])).collect(),
        roles: ["root", "reader"]
            .iter()
            .map(|r| {
                let mut role = json(t, s, &["role", "get", r]);
                if *r == "root" && t.at_least_36() {
                    drop_synthesized_root_permission(&mut role);
                }
                role
            })
            .collect(),
        events: history_events(s, current),
    }
}

/// etcd 3.6's and 3.7's RoleGet answer for the root role with a read-write permission on every key that
/// is not stored (etcd 3.5 and rkv list none; docs/compatibility.md). Only that permission is
/// dropped, so a stored one still shows.
fn drop_synthesized_root_permission(role: &mut Value) {
    let synthesized = serde_json::json!({"permType": 2, "range_end": "AA=="});
    if let Some(Value::Array(perms)) = role.get_mut("perm") {
        perms.retain(|p| *p != synthesized);
        if perms.is_empty() {
            if let Value::Object(m) = role {
                m.remove("perm");
            }
        }
    }
}

/// Compares two observations field by field, naming the first difference.
pub fn assert_same(got: &Observed, want: &Observed) {
    assert_eq!(got.current, want.current, "current revision");
    assert_eq!(got.ranges.len(), want.ranges.len(), "revisions observed");
    for (i, (g, w)) in got.ranges.iter().zip(&want.ranges).enumerate() {
        assert_eq!(g, w, "keys at revision {}", COMPACT_AT + i as i64);
    }
    assert_eq!(got.below_compaction, want.below_compaction, "a read below the compaction");
    assert_eq!(got.hashes, want.hashes, "HashKV (hash, compact revision, revision)");
    assert_eq!(got.leases, want.leases, "lease list");
    assert_eq!(got.lease_keys, want.lease_keys, "lease timetolive --keys");
    assert_eq!(got.auth, want.auth, "auth status");
    assert_eq!(got.users, want.users, "users");
    assert_eq!(got.events.len(), want.events.len(), "events since the compaction");
    for (g, w) in got.events.iter().zip(&want.events) {
        assert_eq!(g, w, "watched event");
    }
    // Last: etcd 3.6 and 3.7 answer `role get root` with the permission root implicitly has (read and
    // write on every key) where etcd 3.5 and rkv list none.
    assert_eq!(got.roles, want.roles, "roles");
}

/// The revision a server gives the next write.
pub fn next_write(t: &EtcdTools, s: &dyn Server) -> Value {
    json(t, s, &["put", "after/restore", "1"])["header"]["revision"].clone()
}
