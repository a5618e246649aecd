//! Replication with openraft: the type configuration, the log store and state machine over
//! the member's RocksDB, the peer transport, and `RaftNode`, which proposes writes (forwarding
//! them from followers to the leader) and serves linearizable reads.
//!
//! Every write of the etcd API is a `RaftCommand` in the log; a single-member cluster takes the
//! same path with a quorum of one.

mod batch;
pub mod codec;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod state_machine;
mod transfer;

#[cfg(test)]
mod conformance;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::apply::{Command, CommandResponse};

use crate::error::ServerError;

/// What a member that is not the leader answers a forwarded proposal with.
pub const NOT_LEADER: &str = "rkv: not the leader";

openraft::declare_raft_types!(
    /// rkv's raft types: commands and results of the etcd API, members named by etcd member IDs.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
        Responder = openraft::impls::OneshotResponder<TypeConfig>,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<u64>;
pub type StoredMembership = openraft::StoredMembership<u64, PeerNode>;

/// What the raft membership knows of a member: its name (empty until it has started, for a
/// member added at run time, as in etcd) and its peer URLs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    pub name: String,
    pub peer_urls: Vec<String>,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.peer_urls.join(","))
    }
}

/// A command in the log, kept in its wire form so that appending and replicating an entry
/// encode it without copying the request; it becomes a `Command` once, when applied.
#[derive(Debug, Clone)]
pub struct Proposal(pub rkv_proto::rkvpb::RaftCommand);

impl Proposal {
    /// `by`: the client that asked for it (None: the member's own command).
    pub fn new(command: Command, by: Option<rkv_proto::rkvpb::AuthInfo>) -> Self {
        Proposal(codec::command_to_proto(command, by))
    }
}

/// The result of applying one log entry, handed to the proposer on the leader.
#[derive(Debug)]
pub struct Applied(pub Result<CommandResponse, ServerError>);

impl fmt::Display for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.0.command.as_ref().map_or("empty", codec::proto_kind);
        f.write_str(kind)
    }
}

// Commands and results travel as their protobuf encoding (rkvpb.RaftCommand / RaftResult):
// the etcd request types are prost messages, and one encoding keeps log entries, snapshots and
// forwarded proposals in the same format.
impl Serialize for Proposal {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&prost::Message::encode_to_vec(&self.0))
    }
}

impl<'de> Deserialize<'de> for Proposal {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_byte_buf(codec::BytesVisitor)?;
        prost::Message::decode(bytes.as_slice()).map(Proposal).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Applied {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&codec::encode_result(&self.0))
    }
}

impl<'de> Deserialize<'de> for Applied {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = d.deserialize_byte_buf(codec::BytesVisitor)?;
        codec::decode_result(&bytes).map(Applied).map_err(serde::de::Error::custom)
    }
}

/// openraft storage errors, by what failed (its constructors live on `StorageIOError`).
pub mod serr {
    use openraft::storage::SnapshotSignature;
    use openraft::{AnyError, StorageError, StorageIOError};

    pub fn read_logs(e: AnyError) -> StorageError<u64> {
        StorageIOError::read_logs(e).into()
    }
    pub fn write_logs(e: AnyError) -> StorageError<u64> {
        StorageIOError::write_logs(e).into()
    }
    pub fn read_vote(e: AnyError) -> StorageError<u64> {
        StorageIOError::read_vote(e).into()
    }
    pub fn write_vote(e: AnyError) -> StorageError<u64> {
        StorageIOError::write_vote(e).into()
    }
    pub fn read(e: AnyError) -> StorageError<u64> {
        StorageIOError::read(e).into()
    }
    pub fn write(e: AnyError) -> StorageError<u64> {
        StorageIOError::write(e).into()
    }
    pub fn read_state_machine(e: AnyError) -> StorageError<u64> {
        StorageIOError::read_state_machine(e).into()
    }
    pub fn write_state_machine(e: AnyError) -> StorageError<u64> {
        StorageIOError::write_state_machine(e).into()
    }
    pub fn read_snapshot(sig: Option<SnapshotSignature<u64>>, e: AnyError) -> StorageError<u64> {
        StorageIOError::read_snapshot(sig, e).into()
    }
    pub fn write_snapshot(sig: Option<SnapshotSignature<u64>>, e: AnyError) -> StorageError<u64> {
        StorageIOError::write_snapshot(sig, e).into()
    }
}
