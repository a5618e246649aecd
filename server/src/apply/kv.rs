//! etcd's KV apply semantics (etcd `server/etcdserver/apply.go`) on top of the MVCC store:
//! range with filters and sorting, put with prev_kv / ignore_value / ignore_lease, delete with
//! prev_kv, and txn with compares, nested txns and per-op response headers.

use std::cmp::Ordering;

use rkv_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use rkv_proto::mvccpb::KeyValue;
use rkv_storage::{KeyRange, KvRead, RangeOptions, TxnWrite};

use crate::error::{Result, ServerError};
use crate::lease::LeaseLookup;

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

/// etcd's `Range` applier: filters and sort need every match, so the limit is applied last.
pub fn range(view: &impl KvRead, r: &RangeRequest) -> Result<RangeResponse> {
    let sort_order = SortOrder::try_from(r.sort_order).map_err(|_| ServerError::InvalidSortOption)?;
    let sort_target = SortTarget::try_from(r.sort_target).map_err(|_| ServerError::InvalidSortOption)?;
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    let mut limit = r.limit;
    if sort_order != SortOrder::None || filtered {
        limit = 0;
    }
    if limit > 0 {
        // One more than asked, to know whether there are more.
        limit += 1;
    }
    let opts = RangeOptions {
        limit: usize::try_from(limit).unwrap_or(0),
        rev: r.revision,
        count_only: r.count_only,
    };
    let rr = view.range(KeyRange::from_request(&r.key, &r.range_end), opts)?;
    let mut kvs = rr.kvs;
    if r.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }
    sort_kvs(&mut kvs, sort_order, sort_target);
    let mut more = false;
    if r.limit > 0 && kvs.len() as i64 > r.limit {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse { header: header(rr.rev), kvs, more, count: rr.count as i64 })
}

/// Results come from the index in ascending key order; a target other than KEY with no order
/// sorts ascending (etcd's rule). The sort is stable: keys with equal targets stay in key order.
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let cmp = |a: &KeyValue, b: &KeyValue| -> Ordering {
        match target {
            SortTarget::Key => a.key.cmp(&b.key),
            SortTarget::Version => a.version.cmp(&b.version),
            SortTarget::Create => a.create_revision.cmp(&b.create_revision),
            SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
            SortTarget::Value => a.value.cmp(&b.value),
        }
    };
    match order {
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
        _ => kvs.sort_by(cmp),
    }
}

/// etcd's `Put` applier inside a write txn. Checks (lease, ignore_*) are done by the caller.
pub fn put(txn: &mut TxnWrite<'_, '_>, p: &PutRequest) -> Result<PutResponse> {
    let mut value = p.value.clone();
    let mut lease = p.lease;
    let mut prev = None;
    if p.ignore_value || p.ignore_lease || p.prev_kv {
        let rr = txn.range(KeyRange::Single(&p.key), RangeOptions::default())?;
        prev = rr.kvs.into_iter().next();
    }
    if p.ignore_value || p.ignore_lease {
        let Some(prev) = &prev else {
            return Err(ServerError::KeyNotFound);
        };
        if p.ignore_value {
            value = prev.value.clone();
        }
        if p.ignore_lease {
            lease = prev.lease;
        }
    }
    let rev = txn.put(&p.key, value, lease)?;
    Ok(PutResponse { header: header(rev), prev_kv: if p.prev_kv { prev } else { None } })
}

pub fn delete_range(txn: &mut TxnWrite<'_, '_>, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
    let range = KeyRange::from_request(&d.key, &d.range_end);
    let mut prev_kvs = Vec::new();
    if d.prev_kv {
        prev_kvs = txn.range(range, RangeOptions::default())?.kvs;
    }
    let (deleted, rev) = txn.delete_range(range)?;
    Ok(DeleteRangeResponse { header: header(rev), deleted, prev_kvs })
}

/// Checks of a single Put before anything is written (etcd's `checkRequestPut` and the lease
/// lookup of a top-level Put).
pub fn check_put(view: &impl KvRead, p: &PutRequest, leases: &impl LeaseLookup) -> Result<()> {
    if p.ignore_value || p.ignore_lease {
        let rr = view.range(KeyRange::Single(&p.key), RangeOptions::default())?;
        if rr.kvs.is_empty() {
            return Err(ServerError::KeyNotFound);
        }
    }
    if p.lease != 0 && !leases.lease_exists(p.lease) {
        return Err(ServerError::LeaseNotFound);
    }
    Ok(())
}

fn check_range_revision(view: &impl KvRead, r: &RangeRequest) -> Result<()> {
    if r.revision == 0 {
        return Ok(());
    }
    if r.revision > view.rev() {
        return Err(rkv_storage::StorageError::FutureRevision.into());
    }
    if r.revision < view.first_rev()? {
        return Err(rkv_storage::StorageError::Compacted.into());
    }
    Ok(())
}

/// The branch every (nested) txn takes, in depth-first order, decided against the state before
/// the txn (etcd's `compareToPath`).
pub fn compare_to_path(view: &impl KvRead, t: &TxnRequest) -> Result<Vec<bool>> {
    let mut path = Vec::new();
    walk_compares(view, t, &mut path)?;
    Ok(path)
}

fn walk_compares(view: &impl KvRead, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
    let mut ok = true;
    for c in &t.compare {
        if !apply_compare(view, c)? {
            ok = false;
            break;
        }
    }
    path.push(ok);
    let ops = if ok { &t.success } else { &t.failure };
    for op in ops {
        if let Some(Request::RequestTxn(nested)) = &op.request {
            walk_compares(view, nested, path)?;
        }
    }
    Ok(())
}

fn apply_compare(view: &impl KvRead, c: &Compare) -> Result<bool> {
    let rr = match view.range(KeyRange::from_request(&c.key, &c.range_end), RangeOptions::default()) {
        Ok(rr) => rr,
        // etcd treats a failed read as a failed compare.
        Err(rkv_storage::StorageError::Compacted | rkv_storage::StorageError::FutureRevision) => {
            return Ok(false)
        }
        Err(e) => return Err(e.into()),
    };
    if rr.kvs.is_empty() {
        if c.target == CompareTarget::Value as i32 {
            // A missing key has no value to compare: always false.
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(rr.kvs.iter().all(|kv| compare_kv(c, kv)))
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
        Ok(CompareTarget::Create) => kv.create_revision.cmp(&int_target(c, |t| match t {
            TargetUnion::CreateRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Mod) => kv.mod_revision.cmp(&int_target(c, |t| match t {
            TargetUnion::ModRevision(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Version) => kv.version.cmp(&int_target(c, |t| match t {
            TargetUnion::Version(v) => Some(*v),
            _ => None,
        })),
        Ok(CompareTarget::Lease) => kv.lease.cmp(&int_target(c, |t| match t {
            TargetUnion::Lease(v) => Some(*v),
            _ => None,
        })),
        // An unknown target compares as equal (etcd's switch falls through with result 0).
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Err(_) => true,
    }
}

fn int_target(c: &Compare, pick: impl Fn(&TargetUnion) -> Option<i64>) -> i64 {
    c.target_union.as_ref().and_then(pick).unwrap_or(0)
}

pub fn is_txn_read_only(t: &TxnRequest) -> bool {
    t.success.iter().chain(&t.failure).all(|op| match &op.request {
        Some(Request::RequestRange(_)) | None => true,
        Some(Request::RequestTxn(nested)) => is_txn_read_only(nested),
        _ => false,
    })
}

/// etcd's `isTxnSerializable`: every op is a serializable range (then no ReadIndex is needed).
pub fn is_txn_serializable(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| matches!(&op.request, Some(Request::RequestRange(r)) if r.serializable))
}

/// etcd's `checkRequests` over the taken path: put checks (write txns) then range revisions.
pub fn check_txn_requests(
    view: &impl KvRead,
    t: &TxnRequest,
    path: &[bool],
    leases: &impl LeaseLookup,
    check_puts: bool,
) -> Result<()> {
    if check_puts {
        walk_path(t, path, &mut |op| match op {
            Request::RequestPut(p) => check_put(view, p, leases),
            _ => Ok(()),
        })?;
    }
    walk_path(t, path, &mut |op| match op {
        Request::RequestRange(r) => check_range_revision(view, r),
        _ => Ok(()),
    })?;
    if check_puts {
        check_from_key_deletes(t, path)?;
    }
    Ok(())
}

/// etcd's duplicate-key check compares a from-key delete's `"\0"` end as a plain string, so a
/// txn may delete a key with `--from-key` and later put it with ignore_value/ignore_lease. etcd
/// then fails in the middle of applying the txn and crashes (the put finds no key). rkv refuses
/// such a txn before it writes anything, with the error the put would have given.
fn check_from_key_deletes(t: &TxnRequest, path: &[bool]) -> Result<()> {
    let mut deleted_from: Option<Vec<u8>> = None;
    walk_path(t, path, &mut |op| {
        match op {
            Request::RequestDeleteRange(d) if d.range_end == [0] => {
                let start = deleted_from.get_or_insert_with(|| d.key.clone());
                if d.key < *start {
                    *start = d.key.clone();
                }
            }
            Request::RequestPut(p)
                if (p.ignore_value || p.ignore_lease)
                    && deleted_from.as_ref().is_some_and(|start| p.key >= *start) =>
            {
                return Err(ServerError::KeyNotFound);
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(())
}

/// Visits the non-txn ops of the branches taken; returns how many path entries nested txns used.
fn walk_path(t: &TxnRequest, path: &[bool], f: &mut impl FnMut(&Request) -> Result<()>) -> Result<usize> {
    let mut used = 0;
    let ops = if path.first().copied().unwrap_or(false) { &t.success } else { &t.failure };
    for op in ops {
        match &op.request {
            Some(Request::RequestTxn(nested)) => {
                let n = walk_path(nested, path.get(1 + used..).unwrap_or(&[]), f)?;
                used += n + 1;
            }
            Some(other) => f(other)?,
            None => {}
        }
    }
    Ok(used)
}

/// Executes a txn whose requests were checked, at the path decided before any write. Read-only
/// txns run on a read view, others in a write txn.
pub fn execute_txn<V: TxnExec>(view: &mut V, t: &TxnRequest, path: &[bool]) -> Result<TxnResponse> {
    let (resp, _) = exec_level(view, t, path)?;
    Ok(resp)
}

/// The view a txn's ops execute on: a read view cannot write.
pub trait TxnExec: KvRead {
    fn exec_put(&mut self, p: &PutRequest) -> Result<PutResponse>;
    fn exec_delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse>;
}

impl TxnExec for TxnWrite<'_, '_> {
    fn exec_put(&mut self, p: &PutRequest) -> Result<PutResponse> {
        put(self, p)
    }

    fn exec_delete(&mut self, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        delete_range(self, d)
    }
}

impl TxnExec for rkv_storage::ReadView<'_> {
    fn exec_put(&mut self, _: &PutRequest) -> Result<PutResponse> {
        Err(ServerError::Storage(rkv_storage::StorageError::Corrupt(
            "put in a txn classified as read-only".into(),
        )))
    }

    fn exec_delete(&mut self, _: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        Err(ServerError::Storage(rkv_storage::StorageError::Corrupt(
            "delete in a txn classified as read-only".into(),
        )))
    }
}

fn exec_level<V: TxnExec>(view: &mut V, t: &TxnRequest, path: &[bool]) -> Result<(TxnResponse, usize)> {
    let succeeded = path.first().copied().unwrap_or(false);
    let ops = if succeeded { &t.success } else { &t.failure };
    let mut responses = Vec::with_capacity(ops.len());
    let mut used = 0;
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Some(Response::ResponseRange(range(&*view, r)?)),
            Some(Request::RequestPut(p)) => Some(Response::ResponsePut(view.exec_put(p)?)),
            Some(Request::RequestDeleteRange(d)) => Some(Response::ResponseDeleteRange(view.exec_delete(d)?)),
            Some(Request::RequestTxn(nested)) => {
                let (resp, n) = exec_level(view, nested, path.get(1 + used..).unwrap_or(&[]))?;
                used += n + 1;
                Some(Response::ResponseTxn(resp))
            }
            None => None,
        };
        responses.push(ResponseOp { response });
    }
    // Nested txn responses carry an empty header, as in etcd.
    Ok((TxnResponse { header: Some(ResponseHeader::default()), succeeded, responses }, used))
}
