//! Differential watch test: the same seeded scenarios (writes, watch creates with start
//! revisions in the past, present and future, compacted ones, ranges, filters, prev_kv,
//! client-chosen and duplicate IDs, more writes, a progress request) run against etcd 3.5 and
//! rkv; each watcher's created response, events (prev_kv included) and cancellation must be
//! equal. A model of the history says how many events each watcher must get, so the test waits
//! for exactly those instead of sleeping.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rkv_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, request_op::Request, CompactionRequest,
    DeleteRangeRequest, LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchResponse,
};
use rkv_proto::mvccpb::Event;
use tonic::transport::Channel;

use common::watch::WatchConn;
use common::{channel, tempdir, Etcd, Rkv};

const KEYS: &[&str] = &["a", "ab", "abc", "b", "ba", "c"];

#[derive(Clone, Debug)]
enum Write {
    Put(String, String),
    Delete(String, String),
    Txn(Vec<Write>),
    /// A lease with a client-chosen ID (the same on both servers) and a long TTL.
    Grant(i64),
    PutLease(String, i64),
    /// Deletes the lease's keys in one revision.
    Revoke(i64),
}

/// Which keys exist and every change so far: (revision, key, is_put).
#[derive(Default)]
struct Model {
    live: BTreeSet<String>,
    /// Granted leases and the live keys attached to them.
    leases: BTreeSet<i64>,
    attached: BTreeMap<String, i64>,
    next_lease: i64,
    /// Keys deleted by lease revocations, and watchers canceled by the client (for the report).
    revoked_keys: usize,
    cancels: usize,
    changes: Vec<(i64, String, bool)>,
    rev: i64,
    compacted: i64,
}

fn in_range(key: &str, start: &str, end: &Option<String>) -> bool {
    match end {
        None => key == start,
        Some(e) if e == "\0" => key >= start,
        Some(e) => key >= start && key < e.as_str(),
    }
}

impl Model {
    fn apply(&mut self, w: &Write) {
        let rev = self.rev + 1;
        let before = self.changes.len();
        self.apply_at(w, rev);
        if self.changes.len() > before {
            self.rev = rev;
        }
    }

    fn apply_at(&mut self, w: &Write, rev: i64) {
        match w {
            Write::Put(k, _) => {
                self.live.insert(k.clone());
                self.attached.remove(k);
                self.changes.push((rev, k.clone(), true));
            }
            Write::PutLease(k, id) => {
                self.live.insert(k.clone());
                self.attached.insert(k.clone(), *id);
                self.changes.push((rev, k.clone(), true));
            }
            Write::Grant(id) => {
                self.leases.insert(*id);
            }
            Write::Revoke(id) => {
                let doomed: Vec<String> =
                    self.attached.iter().filter(|(_, l)| *l == id).map(|(k, _)| k.clone()).collect();
                for d in doomed {
                    self.live.remove(&d);
                    self.attached.remove(&d);
                    self.changes.push((rev, d, false));
                    self.revoked_keys += 1;
                }
                self.leases.remove(id);
            }
            Write::Delete(k, end) => {
                let end = if end.is_empty() { None } else { Some(end.clone()) };
                let doomed: Vec<String> =
                    self.live.iter().filter(|x| in_range(x, k, &end)).cloned().collect();
                for d in doomed {
                    self.live.remove(&d);
                    self.attached.remove(&d);
                    self.changes.push((rev, d, false));
                }
            }
            Write::Txn(ops) => ops.iter().for_each(|op| self.apply_at(op, rev)),
        }
    }
}

fn to_request(w: &Write) -> RequestOp {
    let request = match w {
        Write::Put(k, v) => Request::RequestPut(PutRequest {
            key: k.clone().into(),
            value: v.clone().into(),
            ..Default::default()
        }),
        Write::Delete(k, e) => Request::RequestDeleteRange(DeleteRangeRequest {
            key: k.clone().into(),
            range_end: e.clone().into(),
            ..Default::default()
        }),
        Write::PutLease(k, id) => Request::RequestPut(PutRequest {
            key: k.clone().into(),
            value: b"l".to_vec(),
            lease: *id,
            ..Default::default()
        }),
        other => unreachable!("{other:?} is not a txn op"),
    };
    RequestOp { request: Some(request) }
}

async fn write(ch: &Channel, w: &Write) -> i64 {
    let mut kv = KvClient::new(ch.clone());
    let mut lease = LeaseClient::new(ch.clone());
    let header = match w {
        Write::Grant(id) => {
            lease.lease_grant(LeaseGrantRequest { id: *id, ttl: 3600 }).await.map(|r| r.into_inner().header)
        }
        Write::Revoke(id) => {
            lease.lease_revoke(LeaseRevokeRequest { id: *id }).await.map(|r| r.into_inner().header)
        }
        Write::Put(..) | Write::Delete(..) | Write::PutLease(..) => match to_request(w).request {
            Some(Request::RequestPut(p)) => kv.put(p).await.map(|r| r.into_inner().header),
            Some(Request::RequestDeleteRange(d)) => kv.delete_range(d).await.map(|r| r.into_inner().header),
            _ => unreachable!(),
        },
        Write::Txn(ops) => kv
            .txn(TxnRequest {
                compare: vec![],
                success: ops.iter().map(to_request).collect(),
                failure: vec![],
            })
            .await
            .map(|r| r.into_inner().header),
    };
    header.unwrap_or_else(|e| panic!("write {w:?}: {e}")).map_or(0, |h| h.revision)
}

fn gen_write(rng: &mut StdRng, model: &mut Model) -> Write {
    let key = |rng: &mut StdRng| KEYS[rng.random_range(0..KEYS.len())].to_string();
    let leases: Vec<i64> = model.leases.iter().copied().collect();
    match rng.random_range(0..14) {
        10 if leases.len() < 3 => {
            model.next_lease += 1;
            Write::Grant(model.next_lease)
        }
        11 | 12 if !leases.is_empty() => Write::PutLease(key(rng), leases[rng.random_range(0..leases.len())]),
        13 if !leases.is_empty() => Write::Revoke(leases[rng.random_range(0..leases.len())]),
        10..=13 => Write::Put(key(rng), "p".into()),
        0..=5 => Write::Put(key(rng), format!("v{}", rng.random_range(0..100))),
        6 | 7 => {
            let end = match rng.random_range(0..3) {
                0 => String::new(),
                1 => "\0".to_string(),
                _ => key(rng),
            };
            Write::Delete(key(rng), end)
        }
        _ => {
            let (a, b) = (key(rng), key(rng));
            if a == b {
                Write::Put(a, "t".into())
            } else if rng.random_bool(0.5) {
                Write::Txn(vec![Write::Put(a, "t1".into()), Write::Put(b, "t2".into())])
            } else {
                Write::Txn(vec![Write::Put(a, "t3".into()), Write::Delete(b, String::new())])
            }
        }
    }
}

/// What one watcher must receive.
#[derive(Debug)]
struct Expect {
    events: usize,
    compacted: bool,
    /// Canceled by the client before any event could reach it.
    canceled: bool,
}

/// Everything one watcher received, normalized for comparison.
#[derive(Debug, Default, PartialEq)]
struct Seen {
    created: Option<(i64, bool, bool, String, i64)>,
    events: Vec<Event>,
    /// (canceled, compact_revision) of a cancellation.
    canceled: Option<(bool, i64)>,
}

struct Side {
    conn: WatchConn,
    seen: HashMap<i64, Seen>,
    /// Order in which watchers were created (their IDs), failed creates as -1.
    order: Vec<i64>,
}

impl Side {
    fn route(&mut self, r: WatchResponse) {
        if r.created {
            let rev = r.header.map_or(0, |h| h.revision);
            self.order.push(r.watch_id);
            let s = self.seen.entry(r.watch_id).or_default();
            s.created = Some((r.watch_id, r.created, r.canceled, r.cancel_reason, rev));
            return;
        }
        let s = self.seen.entry(r.watch_id).or_default();
        if r.canceled {
            s.canceled = Some((r.canceled, r.compact_revision));
        }
        s.events.extend(r.events);
    }

    async fn create(&mut self, c: WatchCreateRequest) {
        let before = self.order.len();
        self.conn.create(c).await;
        while self.order.len() == before {
            let r = self.conn.expect("created response").await;
            self.route(r);
        }
    }

    fn done(&self, expect: &[(i64, Expect)]) -> bool {
        expect.iter().all(|(id, e)| {
            let s = self.seen.get(id);
            if e.compacted || e.canceled {
                s.is_some_and(|s| s.canceled.is_some())
            } else {
                s.map_or(0, |s| s.events.len()) >= e.events
            }
        })
    }

    /// Reads until every watcher got what `expect` says; false if that does not happen in time.
    async fn collect(&mut self, expect: &[(i64, Expect)]) -> bool {
        while !self.done(expect) {
            match self.conn.next().await {
                Some(r) => self.route(r),
                None => return false,
            }
        }
        true
    }

    fn summary(&self) -> Vec<(i64, Vec<(i64, i32)>)> {
        let mut out: Vec<_> = self
            .seen
            .iter()
            .map(|(id, s)| {
                (
                    *id,
                    s.events
                        .iter()
                        .map(|e| (e.kv.as_ref().map_or(0, |kv| kv.mod_revision), e.r#type))
                        .collect(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

async fn scenario(seed: u64, etcd: &(Channel, &Etcd), rkv: &(Channel, &Rkv), model: &mut Model) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (ech, rch) = (etcd.0.clone(), rkv.0.clone());
    let do_write = async |w: Write, model: &mut Model| {
        model.apply(&w);
        let (a, b) = (write(&ech, &w).await, write(&rch, &w).await);
        assert_eq!((a, b), (model.rev, model.rev), "seed {seed}: write {w:?} revisions (etcd, rkv) vs model");
    };
    for _ in 0..rng.random_range(2..6) {
        let w = gen_write(&mut rng, model);
        do_write(w, model).await;
    }
    if rng.random_ratio(1, 12) && model.rev - 3 > model.compacted {
        let rev = rng.random_range(model.compacted.max(1) + 1..=model.rev - 2);
        let c = CompactionRequest { revision: rev, physical: true };
        KvClient::new(etcd.0.clone()).compact(c).await.unwrap_or_else(|e| panic!("etcd compact: {e}"));
        KvClient::new(rkv.0.clone()).compact(c).await.unwrap_or_else(|e| panic!("rkv compact: {e}"));
        model.compacted = rev;
    }

    let mut sides = [
        Side { conn: WatchConn::open(etcd.1).await, seen: HashMap::new(), order: Vec::new() },
        Side { conn: WatchConn::open(rkv.1).await, seen: HashMap::new(), order: Vec::new() },
    ];
    let mut watchers = Vec::new();
    let mut used_ids = Vec::new();
    for n in 0..rng.random_range(1..4) {
        let key = KEYS[rng.random_range(0..KEYS.len())].to_string();
        let end = match rng.random_range(0..4) {
            0 | 1 => None,
            2 => Some("\0".to_string()),
            _ => Some(KEYS[rng.random_range(0..KEYS.len())].to_string()),
        };
        let start = match rng.random_range(0..4) {
            0 => 0,
            1 => model.rev + rng.random_range(1..3),
            _ => rng.random_range((model.rev - 8).max(1)..=model.rev),
        };
        let filters: Vec<i32> = match rng.random_range(0..6) {
            0 => vec![0],
            1 => vec![1],
            _ => vec![],
        };
        let watch_id = match rng.random_range(0..6) {
            0 => 100 + n,
            1 if !used_ids.is_empty() => used_ids[0], // a duplicate: refused
            _ => 0,
        };
        let create = WatchCreateRequest {
            key: key.clone().into(),
            range_end: end.clone().unwrap_or_default().into(),
            start_revision: start,
            prev_kv: rng.random_bool(0.5),
            filters: filters.clone(),
            watch_id,
            ..Default::default()
        };
        let empty_range = end.as_ref().is_some_and(|e| e != "\0" && e.as_str() <= key.as_str());
        for side in &mut sides {
            side.create(create.clone()).await;
        }
        let id = *sides[1].order.last().unwrap_or(&-1);
        if id == -1 || empty_range {
            continue;
        }
        used_ids.push(id);
        let from = if start == 0 { model.rev + 1 } else { start };
        watchers.push((id, key, end, from, filters));
    }
    // Sometimes the client cancels a watcher that cannot have had an event yet.
    let mut canceled = None;
    if rng.random_ratio(1, 4) {
        if let Some((id, ..)) = watchers.iter().find(|(_, _, _, from, _)| *from > model.rev) {
            let id = *id;
            for side in &mut sides {
                side.conn.cancel(id).await;
                while side.seen.get(&id).is_none_or(|s| s.canceled.is_none()) {
                    let r = side.conn.expect("cancel response").await;
                    side.route(r);
                }
            }
            canceled = Some(id);
            model.cancels += 1;
        }
    }
    for _ in 0..rng.random_range(2..6) {
        let w = gen_write(&mut rng, model);
        do_write(w, model).await;
    }
    let expect: Vec<(i64, Expect)> = watchers
        .iter()
        .map(|(id, key, end, from, filters)| {
            let compacted = *from < model.compacted;
            let events = model
                .changes
                .iter()
                .filter(|(rev, k, put)| {
                    // Compaction at R drops tombstones at R: a watch from R never sees them.
                    (*put || *rev != model.compacted)
                        && *rev >= *from
                        && in_range(k, key, end)
                        && !(filters.contains(&0) && *put)
                        && (*put || !filters.contains(&1))
                })
                .count();
            let canceled = canceled == Some(*id);
            let events = if canceled { 0 } else { events };
            (*id, Expect { events, compacted, canceled })
        })
        .collect();
    let mut complete = Vec::new();
    for side in sides.iter_mut() {
        complete.push(side.collect(&expect).await);
    }
    if complete != [true, true] {
        let history: Vec<_> = model.changes.iter().filter(|(rev, ..)| *rev >= model.rev - 12).collect();
        panic!(
            "seed {seed}: events incomplete (etcd, rkv) = {complete:?}; expected {expect:?} for watchers \
             {watchers:?}\netcd got {:?}\nrkv got {:?}\nrecent history {history:?}",
            sides[0].summary(),
            sides[1].summary()
        );
    }
    let [etcd_side, rkv_side] = &mut sides;
    assert_eq!(rkv_side.order, etcd_side.order, "seed {seed}: watch IDs");
    let ids: BTreeMap<i64, ()> = etcd_side.order.iter().map(|i| (*i, ())).collect();
    for id in ids.keys() {
        let (e, r) = (etcd_side.seen.get(id), rkv_side.seen.get(id));
        assert_eq!(r, e, "seed {seed}: watcher {id} (rkv left, etcd right); watchers {watchers:?}");
    }
    // A progress request once everything is delivered reports the same revision.
    if expect.iter().any(|(_, e)| !e.compacted && !e.canceled) {
        for side in &mut sides {
            side.conn.progress().await;
        }
        let mut revs = Vec::new();
        for side in &mut sides {
            let r = loop {
                let r = side.conn.expect("progress response").await;
                if r.watch_id == -1 && !r.created {
                    break r;
                }
            };
            assert!(r.events.is_empty());
            revs.push(r.header.map_or(0, |h| h.revision));
        }
        assert_eq!(revs, vec![model.rev, model.rev], "seed {seed}: progress revision");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_match_etcd() {
    let scenarios: u64 =
        std::env::var("RKV_WATCH_SCENARIOS").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    let dir = tempdir();
    let etcd = Etcd::start(dir.path());
    let rkv = Rkv::start_like(dir.path(), &etcd);
    let e = (channel(&etcd).await, &etcd);
    let r = (channel(&rkv).await, &rkv);
    let mut model = Model { rev: 1, compacted: -1, ..Default::default() };
    for seed in 0..scenarios {
        scenario(seed, &e, &r, &mut model).await;
    }
    println!(
        "watch differential: {scenarios} scenarios, {} revisions, {} leases, {} keys deleted by revoke, {} client cancels, 0 mismatches",
        model.rev, model.next_lease, model.revoked_keys, model.cancels
    );
}
