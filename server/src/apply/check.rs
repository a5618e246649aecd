//! Request validation done before a request is proposed (etcd `api/v3rpc/key.go`): the checks
//! and their order decide which error a client sees for a request with several problems.

use std::collections::HashSet;

use rkv_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::error::{Result, ServerError};

pub fn check_range_request(r: &RangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if SortOrder::try_from(r.sort_order).is_err() || SortTarget::try_from(r.sort_target).is_err() {
        return Err(ServerError::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put_request(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(ServerError::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(ServerError::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete_request(r: &DeleteRangeRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(ServerError::EmptyKey);
    }
    Ok(())
}

/// etcd's `checkTxnRequest` then `checkIntervals` on both branches.
pub fn check_txn(r: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    check_txn_request(r, max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn check_txn_request(r: &TxnRequest, max_txn_ops: usize) -> Result<()> {
    let opc = r.compare.len().max(r.success.len()).max(r.failure.len());
    if opc > max_txn_ops {
        return Err(ServerError::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(ServerError::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        check_request_op(op, max_txn_ops - opc)?;
    }
    Ok(())
}

fn check_request_op(op: &RequestOp, max_txn_ops: usize) -> Result<()> {
    match &op.request {
        Some(Request::RequestRange(r)) => check_range_request(r),
        Some(Request::RequestPut(r)) => check_put_request(r),
        Some(Request::RequestDeleteRange(r)) => check_delete_request(r),
        Some(Request::RequestTxn(r)) => check_txn_request(r, max_txn_ops),
        // An empty op: etcd answers "key not found".
        None => Err(ServerError::KeyNotFound),
    }
}

/// A delete interval in etcd's interval tree: `[start, end)`, where an empty `end` is +inf and a
/// one-key delete is the point `[key, key\0)`. etcd compares ends as plain strings, so a
/// `"\0"` range end (from-key) is an (empty) interval here exactly as it is in etcd.
#[derive(Clone, Debug)]
struct Interval {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl Interval {
    fn of_delete(r: &DeleteRangeRequest) -> Self {
        if r.range_end.is_empty() {
            let mut end = r.key.clone();
            end.push(0);
            Interval { start: r.key.clone(), end: Some(end) }
        } else {
            Interval { start: r.key.clone(), end: Some(r.range_end.clone()) }
        }
    }

    fn contains(&self, key: &[u8]) -> bool {
        self.start.as_slice() <= key && self.end.as_deref().is_none_or(|e| key < e)
    }
}

fn intersects(dels: &[Interval], key: &[u8]) -> bool {
    dels.iter().any(|iv| iv.contains(key))
}

/// etcd's `checkIntervals`: no key may be put twice, or put and deleted, on any path through
/// the txn. Returns the keys put and the intervals deleted at this level and below.
fn check_intervals(reqs: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<Interval>)> {
    let mut dels: Vec<Interval> = reqs
        .iter()
        .filter_map(|r| match &r.request {
            Some(Request::RequestDeleteRange(d)) => Some(Interval::of_delete(d)),
            _ => None,
        })
        .collect();

    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for req in reqs {
        let Some(Request::RequestTxn(t)) = &req.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for k in &puts_then {
            if puts.contains(k) || intersects(&dels, k) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        for k in &puts_else {
            // then/else are exclusive: the same key in both branches is fine.
            if puts.contains(k) && !puts_then.contains(k) {
                return Err(ServerError::DuplicateKey);
            }
            if intersects(&dels, k) {
                return Err(ServerError::DuplicateKey);
            }
            puts.insert(k.clone());
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }

    for req in reqs {
        let Some(Request::RequestPut(p)) = &req.request else {
            continue;
        };
        if puts.contains(&p.key) || intersects(&dels, &p.key) {
            return Err(ServerError::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str) -> RequestOp {
        RequestOp { request: Some(Request::RequestPut(PutRequest { key: k.into(), ..Default::default() })) }
    }

    fn del(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                ..Default::default()
            })),
        }
    }

    fn txn(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp { request: Some(Request::RequestTxn(TxnRequest { compare: vec![], success, failure })) }
    }

    fn check(ops: Vec<RequestOp>) -> bool {
        check_txn(&TxnRequest { compare: vec![], success: ops, failure: vec![] }, 128).is_ok()
    }

    #[test]
    fn duplicate_keys_follow_etcd() {
        assert!(!check(vec![put("a"), put("a")]));
        assert!(!check(vec![put("a"), del("a", "")]));
        assert!(!check(vec![del("a", "c"), put("b")]));
        assert!(check(vec![del("a", "c"), put("c")]));
        assert!(check(vec![del("a", ""), del("a", "")]));
        // etcd compares "\0" as a plain string end: from-key deletes do not conflict.
        assert!(check(vec![del("a", "\0"), put("b")]));
        // then/else of a nested txn are exclusive.
        assert!(check(vec![txn(vec![put("a")], vec![put("a")])]));
        assert!(!check(vec![txn(vec![put("a")], vec![]), put("a")]));
        assert!(!check(vec![del("a", ""), txn(vec![put("a")], vec![])]));
    }

    #[test]
    fn too_many_ops_and_empty_ops() {
        let ops: Vec<RequestOp> = (0..129).map(|i| put(&format!("k{i}"))).collect();
        assert!(matches!(
            check_txn(&TxnRequest { compare: vec![], success: ops, failure: vec![] }, 128),
            Err(ServerError::TooManyOps)
        ));
        let empty =
            TxnRequest { compare: vec![], success: vec![RequestOp { request: None }], failure: vec![] };
        assert!(matches!(check_txn(&empty, 128), Err(ServerError::KeyNotFound)));
    }
}
