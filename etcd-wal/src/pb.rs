//! etcd's protobuf messages that appear in a WAL, written by hand (no protoc at build time).
//!
//! Field numbers follow etcd's `walpb/record.proto`, raft's `raftpb/raft.proto` and
//! `etcdserverpb/etcdserver.proto`. Those are proto2 files whose gogoproto "non-nullable" fields
//! are always written; decoding them as plain proto3-style scalars gives the same values, and
//! fields a version does not write (`Snapshot.conf_state` before 3.5) decode as their defaults.

/// `walpb.Record`: one frame of a WAL file.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Record {
    /// One of the `*_TYPE` constants below.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// The rolling CRC-32C of the data of every non-CRC record so far, this one included; for
    /// a CRC record, the chain's value at the end of the previous file.
    #[prost(uint32, tag = "2")]
    pub crc: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
}

/// `Record.type` values (etcd's `wal.MetadataType` ... `wal.SnapshotType`).
pub const METADATA_TYPE: i64 = 1;
pub const ENTRY_TYPE: i64 = 2;
pub const STATE_TYPE: i64 = 3;
pub const CRC_TYPE: i64 = 4;
pub const SNAPSHOT_TYPE: i64 = 5;

/// `walpb.Snapshot`: the raft position of a snapshot that etcd saved (or received).
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Snapshot {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    /// Written since etcd 3.5 (absent in the bootstrap record at index 0 and in 3.4's).
    #[prost(message, optional, tag = "3")]
    pub conf_state: Option<ConfState>,
}

/// `raftpb.ConfState`. proto2 repeated scalars are not packed; prost reads both forms.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct ConfState {
    #[prost(uint64, repeated, packed = "false", tag = "1")]
    pub voters: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "2")]
    pub learners: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "3")]
    pub voters_outgoing: Vec<u64>,
    #[prost(uint64, repeated, packed = "false", tag = "4")]
    pub learners_next: Vec<u64>,
    #[prost(bool, tag = "5")]
    pub auto_leave: bool,
}

/// `raftpb.Entry`. Note the field numbers: Type is 1, Term 2, Index 3, Data 4.
#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct Entry {
    #[prost(enumeration = "EntryType", tag = "1")]
    pub r#type: i32,
    #[prost(uint64, tag = "2")]
    pub term: u64,
    #[prost(uint64, tag = "3")]
    pub index: u64,
    /// For a normal entry, an `etcdserverpb.InternalRaftRequest` (empty for the entry a new
    /// leader appends); for a conf change, a `raftpb.ConfChange` or `ConfChangeV2`.
    #[prost(bytes = "vec", tag = "4")]
    pub data: Vec<u8>,
}

/// `raftpb.EntryType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum EntryType {
    Normal = 0,
    ConfChange = 1,
    ConfChangeV2 = 2,
}

/// `raftpb.HardState`: raft's durable vote and commit position.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct HardState {
    #[prost(uint64, tag = "1")]
    pub term: u64,
    #[prost(uint64, tag = "2")]
    pub vote: u64,
    #[prost(uint64, tag = "3")]
    pub commit: u64,
}

/// `etcdserverpb.Metadata`: what etcd writes in every WAL file's metadata record.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Metadata {
    #[prost(uint64, tag = "1")]
    pub node_id: u64,
    #[prost(uint64, tag = "2")]
    pub cluster_id: u64,
}
