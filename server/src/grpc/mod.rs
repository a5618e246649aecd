//! The gRPC services of the etcd v3 API. Each handler validates like etcd's `v3rpc` layer,
//! then reads the store or proposes through raft, and fills the response header.
//! Services not implemented yet (Auth) are not registered: clients get
//! `Unimplemented`, as from an etcd built without them.

pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod watch;

use std::sync::Arc;

use prost::Message;
use rkv_proto::etcdserverpb::ResponseHeader;
use tonic::Status;

use crate::error::ServerError;
use crate::member::MemberState;

impl MemberState {
    /// The header etcd puts on a response: ids, term, and the store revision unless the
    /// request set its own.
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let h = header.get_or_insert_with(ResponseHeader::default);
        h.cluster_id = self.identity.cluster_id;
        h.member_id = self.identity.member_id;
        h.raft_term = self.node.term();
        if h.revision == 0 {
            h.revision = self.store.current_revision().unwrap_or(0);
        }
    }

    /// The gRPC receive limit etcd sets (`--max-request-bytes` + 512 KiB), with grpc-go's error.
    pub fn check_message_size(&self, msg: &impl Message) -> Result<(), Status> {
        let size = msg.encoded_len();
        let limit = self.config.max_request_bytes + crate::config::GRPC_OVERHEAD_BYTES;
        if size > limit {
            return Err(ServerError::MessageTooLarge { size, limit }.into());
        }
        Ok(())
    }

    /// etcd refuses a write whose raft entry would exceed `--max-request-bytes`.
    pub fn check_proposal_size(&self, msg: &impl Message) -> Result<(), Status> {
        // The raft entry wraps the request: a request header (~13 bytes) plus its own tag+len.
        let len = msg.encoded_len();
        let entry = len + prost::encoding::encoded_len_varint(len as u64) + 1 + 13;
        if entry > self.config.max_request_bytes {
            return Err(ServerError::RequestTooLarge.into());
        }
        Ok(())
    }
}

pub type Shared = Arc<MemberState>;
