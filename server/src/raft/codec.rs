//! Encodings of what crosses the log and the peer links: commands and results as protobuf
//! (rkvpb), openraft's own messages as postcard (compact serde).

use prost::Message;
use rkv_proto::rkvpb::{
    raft_command, raft_result, AuthCommand, AuthInfo, AuthResult, Empty, ErrorStatus, RaftCommand,
    RaftResult, ResultBatch,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::apply::{Command, CommandResponse, Proposed};
use crate::error::ServerError;

pub fn command_to_proto(command: Command, by: Option<AuthInfo>) -> RaftCommand {
    use raft_command::Command as C;
    let c = match command {
        Command::Put(r) => C::Put(r),
        Command::DeleteRange(r) => C::DeleteRange(r),
        Command::Txn(r) => C::Txn(r),
        Command::Compact(r) => C::Compaction(r),
        Command::LeaseGrant(r) => C::LeaseGrant(r),
        Command::LeaseRevoke(r) => C::LeaseRevoke(r),
        Command::Publish(r) => C::Publish(r),
        Command::Alarm(r) => C::Alarm(r),
        Command::Auth(r) => C::Auth(AuthCommand { request: Some(r) }),
    };
    RaftCommand { command: Some(c), auth_info: by }
}

/// What a log entry's command is, for logs.
pub fn proto_kind(c: &raft_command::Command) -> &'static str {
    use raft_command::Command as C;
    match c {
        C::Put(_) => "put",
        C::DeleteRange(_) => "delete_range",
        C::Txn(_) => "txn",
        C::Compaction(_) => "compact",
        C::LeaseGrant(_) => "lease_grant",
        C::LeaseRevoke(_) => "lease_revoke",
        C::Publish(_) => "publish",
        C::Alarm(_) => "alarm",
        C::Auth(_) => "auth",
        C::Batch(_) => "batch",
    }
}

pub fn command_from_proto(msg: RaftCommand) -> Result<Proposed, String> {
    use raft_command::Command as C;
    let by = msg.auth_info;
    let command = match msg.command.ok_or("empty raft command")? {
        C::Put(r) => Command::Put(r),
        C::DeleteRange(r) => Command::DeleteRange(r),
        C::Txn(r) => Command::Txn(r),
        C::Compaction(r) => Command::Compact(r),
        C::LeaseGrant(r) => Command::LeaseGrant(r),
        C::LeaseRevoke(r) => Command::LeaseRevoke(r),
        C::Publish(r) => Command::Publish(r),
        C::Alarm(r) => Command::Alarm(r),
        C::Auth(a) => Command::Auth(a.request.ok_or("empty auth command")?),
        // The state machine opens batches before it decodes their commands.
        C::Batch(_) => return Err("a batch inside a batch".to_string()),
    };
    Ok(Proposed { command, by })
}

pub fn result_to_proto(result: &Result<CommandResponse, ServerError>) -> RaftResult {
    use raft_result::Result as R;
    let r = match result {
        Ok(CommandResponse::Put(r)) => R::Put(r.clone()),
        Ok(CommandResponse::DeleteRange(r)) => R::DeleteRange(r.clone()),
        Ok(CommandResponse::Txn(r)) => R::Txn(r.clone()),
        Ok(CommandResponse::Compact(r)) => R::Compaction(*r),
        Ok(CommandResponse::LeaseGrant(r)) => R::LeaseGrant(r.clone()),
        Ok(CommandResponse::LeaseRevoke(r)) => R::LeaseRevoke(*r),
        Ok(CommandResponse::Done) => R::Done(Empty {}),
        Ok(CommandResponse::Alarm(r)) => R::Alarm(r.clone()),
        Ok(CommandResponse::Auth(token)) => R::Auth(AuthResult { token: token.clone().unwrap_or_default() }),
        Ok(CommandResponse::Batch(results)) => {
            R::Batch(ResultBatch { results: results.iter().map(result_to_proto).collect() })
        }
        Err(e) => {
            let status = tonic::Status::from(e);
            R::Error(ErrorStatus { code: status.code() as i32, message: status.message().to_string() })
        }
    };
    RaftResult { result: Some(r), log_index: 0 }
}

/// The result a leader sent back; its errors arrive as the gRPC status to answer with.
pub fn result_from_proto(msg: RaftResult) -> Result<Result<CommandResponse, ServerError>, String> {
    use raft_result::Result as R;
    Ok(match msg.result.ok_or("empty raft result")? {
        R::Put(r) => Ok(CommandResponse::Put(r)),
        R::DeleteRange(r) => Ok(CommandResponse::DeleteRange(r)),
        R::Txn(r) => Ok(CommandResponse::Txn(r)),
        R::Compaction(r) => Ok(CommandResponse::Compact(r)),
        R::LeaseGrant(r) => Ok(CommandResponse::LeaseGrant(r)),
        R::LeaseRevoke(r) => Ok(CommandResponse::LeaseRevoke(r)),
        R::Done(_) => Ok(CommandResponse::Done),
        R::Alarm(r) => Ok(CommandResponse::Alarm(r)),
        R::Auth(a) => Ok(CommandResponse::Auth(Some(a.token).filter(|t| !t.is_empty()))),
        R::Batch(b) => Ok(CommandResponse::Batch(
            b.results
                .into_iter()
                .map(|r| result_from_proto(r).unwrap_or(Err(ServerError::UnexpectedResponse)))
                .collect(),
        )),
        R::Error(e) => Err(ServerError::Remote(tonic::Status::new(tonic::Code::from(e.code), e.message))),
    })
}

pub fn encode_result(result: &Result<CommandResponse, ServerError>) -> Vec<u8> {
    result_to_proto(result).encode_to_vec()
}

pub fn decode_result(bytes: &[u8]) -> Result<Result<CommandResponse, ServerError>, String> {
    result_from_proto(RaftResult::decode(bytes).map_err(|e| format!("bad raft result: {e}"))?)
}

/// Accepts bytes however a serde format hands them over.
pub struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot encode or decode a raft message: {0}")]
pub struct CodecError(#[from] postcard::Error);

pub fn to_bytes<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(postcard::to_allocvec(value)?)
}

pub fn from_bytes<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(postcard::from_bytes(bytes)?)
}
