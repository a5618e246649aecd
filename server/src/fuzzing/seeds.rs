//! The fuzz targets' seeds: valid inputs of every kind each target reads.

use std::path::Path;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{CommittedLeaderId, EntryPayload, Membership, SnapshotMeta, StoredMembership, Vote};
use prost::Message;
use rkv_proto::etcdserverpb::{
    compare, request_op, AlarmRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthUserAddRequest, AuthUserGrantRoleRequest, CompactionRequest, Compare, DeleteRangeRequest,
    LeaseGrantRequest, LeaseRevokeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rkv_proto::mvccpb::KeyValue;
use rkv_proto::{authpb, rkvpb};
use rkv_storage::Revision;

use super::{etcd, ApplyHarness};
use crate::apply::Command;
use crate::raft::codec::to_bytes;
use crate::raft::membership::MembershipChange;
use crate::raft::state_machine::RaftApplied;
use crate::raft::{LogId, PeerNode, Proposal, TypeConfig};

type Seeds = Vec<(&'static str, Vec<u8>)>;

/// Valid inputs for each target, by target name: the starting corpus (`scripts/fuzz.sh`
/// writes them out) and inputs `tests/fuzz_corpus.rs` always replays.
pub fn seeds(scratch: &Path) -> Result<Seeds, String> {
    let requests = client_requests();
    let entries = raft_entries();
    let mut seeds: Seeds = vec![("client_requests", requests.clone())];
    for e in &entries {
        seeds.push(("raft_entry", enc(e)?));
    }
    for (kind, payload) in peer_messages(&entries)? {
        seeds.push(("peer_message", [vec![kind], payload].concat()));
    }
    seeds.extend(stores(scratch, &requests)?);
    Ok(seeds)
}

fn enc<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, String> {
    to_bytes(v).map_err(|e| e.to_string())
}

fn put(k: &str, v: &str, lease: i64) -> PutRequest {
    PutRequest { key: k.into(), value: v.into(), lease, prev_kv: true, ..Default::default() }
}

fn sample_txn() -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            key: b"a".to_vec(),
            target_union: Some(compare::TargetUnion::Version(1)),
            ..Default::default()
        }],
        success: vec![RequestOp { request: Some(request_op::Request::RequestPut(put("c", "3", 0))) }],
        failure: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: b"b".to_vec(),
                ..Default::default()
            })),
        }],
    }
}

fn one_member() -> Membership<u64, PeerNode> {
    Membership::<u64, PeerNode>::new(
        vec![[1u64].into_iter().collect()],
        [(1u64, PeerNode { name: "m1".into(), peer_urls: vec!["http://127.0.0.1:2380".into()] })]
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

/// Client requests in the target's framing: a kind byte, a 16-bit length, the message.
fn client_requests() -> Vec<u8> {
    let mut requests = Vec::new();
    let mut add = |kind: u8, msg: Vec<u8>| {
        requests.push(kind);
        requests.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        requests.extend(msg);
    };
    add(1, put("a", "1", 0).encode_to_vec());
    add(1, put("b", "2", 0).encode_to_vec());
    add(
        0,
        RangeRequest { key: b"a".to_vec(), range_end: b"z".to_vec(), ..Default::default() }.encode_to_vec(),
    );
    add(3, sample_txn().encode_to_vec());
    add(5, LeaseGrantRequest { ttl: 10, id: 7 }.encode_to_vec());
    add(1, put("l", "x", 7).encode_to_vec());
    add(
        2,
        DeleteRangeRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), prev_kv: true }.encode_to_vec(),
    );
    add(4, CompactionRequest { revision: 3, physical: false }.encode_to_vec());
    add(6, LeaseRevokeRequest { id: 7 }.encode_to_vec());
    requests
}

/// Log entries of every kind: blank, membership, commands, a batch, auth changes.
fn raft_entries() -> Vec<openraft::Entry<TypeConfig>> {
    let entry = |index: u64, payload: EntryPayload<TypeConfig>| openraft::Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload,
    };
    let normal = |command: Command| EntryPayload::Normal(Proposal::new(command, None));
    let auth = |r: rkvpb::auth_command::Request| Command::Auth(r);
    vec![
        entry(1, EntryPayload::Blank),
        entry(2, EntryPayload::Membership(one_member())),
        entry(3, normal(Command::Put(put("k", "v", 0)))),
        entry(4, normal(Command::Txn(sample_txn()))),
        entry(5, normal(Command::Alarm(AlarmRequest { action: 1, member_id: 1, alarm: 1 }))),
        entry(
            6,
            normal(auth(rkvpb::auth_command::Request::UserAdd(AuthUserAddRequest {
                name: "u".into(),
                hashed_password: "$2a$04$invalidhashinvalidhashinvalidhashinvalidhashinvalidha".into(),
                ..Default::default()
            }))),
        ),
        // A batch entry, as the leader writes concurrent proposals.
        entry(
            7,
            EntryPayload::Normal(Proposal(rkvpb::RaftCommand {
                command: Some(rkvpb::raft_command::Command::Batch(rkvpb::CommandBatch {
                    commands: vec![
                        crate::raft::codec::command_to_proto(Command::Put(put("b1", "1", 0)), None),
                        crate::raft::codec::command_to_proto(
                            Command::DeleteRange(DeleteRangeRequest {
                                key: b"b1".to_vec(),
                                ..Default::default()
                            }),
                            None,
                        ),
                    ],
                })),
                auth_info: None,
            })),
        ),
        entry(
            8,
            normal(auth(rkvpb::auth_command::Request::RoleAdd(AuthRoleAddRequest { name: "r".into() }))),
        ),
        entry(
            9,
            normal(auth(rkvpb::auth_command::Request::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: Some(authpb::Permission { perm_type: 2, key: b"a".to_vec(), range_end: b"b".to_vec() }),
            }))),
        ),
        entry(
            10,
            normal(auth(rkvpb::auth_command::Request::UserGrantRole(AuthUserGrantRoleRequest {
                user: "u".into(),
                role: "r".into(),
            }))),
        ),
    ]
}

/// The peer RPCs' payloads and the raft state records, by the target's kind byte.
fn peer_messages(entries: &[openraft::Entry<TypeConfig>]) -> Result<Vec<(u8, Vec<u8>)>, String> {
    let vote = Vote::new_committed(1, 1);
    let last = Some(LogId::new(CommittedLeaderId::new(1, 1), 10));
    let membership = one_member();
    Ok(vec![
        (
            0,
            enc(&AppendEntriesRequest::<TypeConfig> {
                vote,
                prev_log_id: None,
                entries: entries.to_vec(),
                leader_commit: last,
            })?,
        ),
        (1, enc(&VoteRequest::<u64>::new(Vote::new(2, 1), last))?),
        (
            2,
            enc(&InstallSnapshotRequest::<TypeConfig> {
                vote,
                meta: SnapshotMeta {
                    last_log_id: last,
                    last_membership: StoredMembership::new(last, membership.clone()),
                    snapshot_id: "1-9-0".into(),
                },
                offset: 0,
                data: b"RKVSNAP1".to_vec(),
                done: false,
            })?,
        ),
        (
            3,
            enc(&MembershipChange::Add {
                id: 2,
                node: PeerNode { name: "m2".into(), peer_urls: vec!["http://127.0.0.1:2480".into()] },
                learner: true,
            })?,
        ),
        (4, enc(&RaftApplied { last_applied: last, membership: StoredMembership::new(last, membership) })?),
        (5, enc(&last)?),
    ])
}

/// A real store's snapshot (whole, and as the records the framed mode reads) and its etcd
/// database export.
fn stores(scratch: &Path, requests: &[u8]) -> Result<Seeds, String> {
    let mut out: Seeds = Vec::new();
    let mut harness = ApplyHarness::new(scratch)?;
    harness.client_requests(requests);
    let mut exported = vec![0u8];
    harness.store().export_snapshot(&mut exported, b"raft/applied").map_err(|e| e.to_string())?;
    out.push(("snapshot", exported));
    let mut records = vec![1u8];
    let kv = KeyValue {
        key: b"a".to_vec(),
        create_revision: 2,
        mod_revision: 2,
        version: 1,
        ..Default::default()
    };
    let (key, value) = (Revision::new(2, 0).encode(false), kv.encode_to_vec());
    records.extend([0, key.len() as u8]);
    records.extend(key);
    records.push(value.len() as u8);
    records.extend(value);
    out.push(("snapshot", records));
    out.push(("etcd_db", etcd::db_seed(harness.store(), scratch)?));
    Ok(out)
}
