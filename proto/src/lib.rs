//! The etcd v3 API wire contract, generated from the .proto files in `proto/`.
//!
//! Module paths follow etcd's protobuf packages (`etcdserverpb`, `mvccpb`, `authpb`, `v3lockpb`,
//! `v3electionpb`) so that the gRPC service paths (`/etcdserverpb.KV/Range`, ...) are exactly
//! etcd's. This crate holds no logic.

#![allow(clippy::all, missing_docs)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

pub mod authpb {
    tonic::include_proto!("authpb");
}

pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's lock service (`/v3lockpb.Lock/...`).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's election service (`/v3electionpb.Election/...`).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// rkv's own raft commands and member-to-member RPC (not part of etcd's API).
pub mod rkvpb {
    tonic::include_proto!("rkvpb");
}
