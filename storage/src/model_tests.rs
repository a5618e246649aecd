//! Property test: the store against a plain in-memory model of etcd's MVCC semantics.
//!
//! The model keeps the whole history as a list of (revision, key, value-or-deleted) and answers
//! every read by scanning it, so it is obviously right; the store must give the same answer for
//! every field, before and after compactions and restarts.

use std::collections::BTreeMap;

use proptest::prelude::*;
use rkv_proto::mvccpb::KeyValue;

use crate::{AppliedIndex, Durability, KeyRange, RangeOptions, StorageError, Store};

#[derive(Clone, Debug)]
enum WriteOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>, Vec<u8>),
}

#[derive(Clone, Debug)]
enum Op {
    Txn(Vec<WriteOp>),
    Range { key: Vec<u8>, end: Vec<u8>, rev: i64, limit: usize, count_only: bool },
    Compact(i64),
    Reopen,
}

#[derive(Default)]
struct Model {
    /// (main revision, key, value: None = tombstone), in revision order.
    history: Vec<(i64, Vec<u8>, Option<KeyValue>)>,
    current: i64,
    compacted: i64,
}

impl Model {
    fn new() -> Self {
        Self { history: Vec::new(), current: 1, compacted: -1 }
    }

    fn state_at(&self, rev: i64) -> BTreeMap<Vec<u8>, KeyValue> {
        let mut state = BTreeMap::new();
        for (r, key, value) in &self.history {
            if *r > rev {
                break;
            }
            match value {
                Some(kv) => state.insert(key.clone(), kv.clone()),
                None => state.remove(key),
            };
        }
        state
    }

    fn range(
        &self,
        key: &[u8],
        end: &[u8],
        rev: i64,
        limit: usize,
        count_only: bool,
    ) -> Result<(Vec<KeyValue>, usize, i64), &'static str> {
        if rev > self.current {
            return Err("future");
        }
        let at = if rev <= 0 { self.current } else { rev };
        if at < self.compacted {
            return Err("compacted");
        }
        let range = KeyRange::from_request(key, end);
        let all: Vec<KeyValue> =
            self.state_at(at).into_iter().filter(|(k, _)| range.contains(k)).map(|(_, kv)| kv).collect();
        let count = all.len();
        let kvs = if count_only {
            Vec::new()
        } else if limit > 0 {
            all.into_iter().take(limit).collect()
        } else {
            all
        };
        Ok((kvs, count, self.current))
    }

    fn txn(&mut self, ops: &[WriteOp]) -> i64 {
        let main = self.current + 1;
        let mut changed = false;
        for op in ops {
            let state = self.state_at(main);
            match op {
                WriteOp::Put(key, value) => {
                    let (create_revision, version) = match state.get(key) {
                        Some(kv) => (kv.create_revision, kv.version + 1),
                        None => (main, 1),
                    };
                    let kv = KeyValue {
                        key: key.clone(),
                        create_revision,
                        mod_revision: main,
                        version,
                        value: value.clone(),
                        lease: 0,
                    };
                    self.history.push((main, key.clone(), Some(kv)));
                    changed = true;
                }
                WriteOp::Delete(key, end) => {
                    let range = KeyRange::from_request(key, end);
                    for k in state.keys().filter(|k| range.contains(k)) {
                        self.history.push((main, k.clone(), None));
                        changed = true;
                    }
                }
            }
        }
        if changed {
            self.current = main;
        }
        self.current
    }

    fn compact(&mut self, rev: i64) -> Result<(), &'static str> {
        if rev <= self.compacted {
            return Err("compacted");
        }
        if rev > self.current {
            return Err("future");
        }
        self.compacted = rev;
        Ok(())
    }
}

fn error_name(e: &StorageError) -> &'static str {
    match e {
        StorageError::Compacted => "compacted",
        StorageError::FutureRevision => "future",
        _ => "other",
    }
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"b".to_vec(),
        b"ba".to_vec(),
        b"c".to_vec(),
        b"d\xff".to_vec(),
        b"e".to_vec(),
    ])
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![Just(Vec::new()), Just(vec![0u8]), key(),]
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    prop_oneof![
        3 => (key(), prop::collection::vec(any::<u8>(), 0..4)).prop_map(|(k, v)| WriteOp::Put(k, v)),
        1 => (key(), range_end()).prop_map(|(k, e)| WriteOp::Delete(k, e)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(write_op(), 1..4).prop_map(Op::Txn),
        4 => (key(), range_end(), -2i64..40, 0usize..4, any::<bool>()).prop_map(
            |(key, end, rev, limit, count_only)| Op::Range { key, end, rev, limit, count_only }),
        1 => (-2i64..40).prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// Puts of one key twice in a txn are refused by the server (duplicate key); the model and the
/// store agree on them anyway, but keep the sequences to what etcd accepts.
fn distinct_put_keys(ops: &[WriteOp]) -> bool {
    let mut seen = std::collections::HashSet::new();
    ops.iter().all(|op| match op {
        WriteOp::Put(k, _) => seen.insert(k.clone()),
        WriteOp::Delete(..) => true,
    })
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut store = Store::open(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut model = Model::new();
    let mut applied = 0u64;
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Txn(writes) => {
                if !distinct_put_keys(&writes) {
                    continue;
                }
                let want = model.txn(&writes);
                let mut w = store.writer().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let mut t = w.txn();
                for write in &writes {
                    let r = match write {
                        WriteOp::Put(k, v) => t.put(k, v.clone(), 0).map(|_| ()),
                        WriteOp::Delete(k, e) => t.delete_range(KeyRange::from_request(k, e)).map(|_| ()),
                    };
                    r.map_err(|e| TestCaseError::fail(format!("step {step}: {e}")))?;
                }
                let got = t.end();
                applied += 1;
                let committed = w
                    .commit(AppliedIndex { term: 1, index: applied }, Durability::Buffered)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(got, want, "step {}: txn revision", step);
                prop_assert_eq!(committed.current_rev, want, "step {}: committed revision", step);
            }
            Op::Range { key, end, rev, limit, count_only } => {
                let want = model.range(&key, &end, rev, limit, count_only);
                let got = store
                    .range(KeyRange::from_request(&key, &end), RangeOptions { limit, rev, count_only })
                    .map(|r| (r.kvs, r.count, r.rev))
                    .map_err(|e| error_name(&e));
                prop_assert_eq!(got, want, "step {}: range {:?}..{:?} at {}", step, key, end, rev);
            }
            Op::Compact(rev) => {
                let want = model.compact(rev);
                let mut w = store.writer().map_err(|e| TestCaseError::fail(e.to_string()))?;
                let got = w.compact(rev).map_err(|e| error_name(&e));
                applied += 1;
                w.commit(AppliedIndex { term: 1, index: applied }, Durability::Buffered)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if let Ok(scheduled) = &got {
                    store.finish_compaction(scheduled).map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                prop_assert_eq!(got.map(|s| s.rev), want.map(|_| rev), "step {}: compact {}", step, rev);
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(
                    store.current_revision().ok(),
                    Some(model.current),
                    "step {}: revision after reopen",
                    step
                );
                prop_assert_eq!(
                    store.compacted_revision().ok(),
                    Some(model.compacted),
                    "step {}: compacted after reopen",
                    step
                );
                prop_assert_eq!(
                    store.applied_index().ok().map(|a| a.index),
                    Some(applied),
                    "step {}: applied after reopen",
                    step
                );
            }
        }
    }
    // Every revision still readable must answer like the model.
    for rev in model.compacted.max(1)..=model.current {
        let want = model.range(b"\0", b"\0", rev, 0, false);
        let got = store
            .range(KeyRange::from_request(b"\0", b"\0"), RangeOptions { rev, ..Default::default() })
            .map(|r| (r.kvs, r.count, r.rev))
            .map_err(|e| error_name(&e));
        prop_assert_eq!(got, want, "final read at {}", rev);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}
