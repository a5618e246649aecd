//! The etcd v3 API wire contract, generated from the .proto files in `proto/`.
//!
//! Module paths follow etcd's protobuf packages (`etcdserverpb`, `mvccpb`, `authpb`) so that the
//! gRPC service paths (`/etcdserverpb.KV/Range`, ...) are exactly etcd's. This crate holds no logic.

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

/// rkv's own raft commands and member-to-member RPC (not part of etcd's API).
pub mod rkvpb {
    tonic::include_proto!("rkvpb");
}
