//! What the handlers answer with: the etcd responses whose header `MemberState::reply` fills,
//! and for each command a handler proposes, the kind of applier answer it expects back
//! (`MemberState::propose_for`).

use rkv_proto::etcdserverpb::{
    AlarmResponse, CompactionResponse, DefragmentResponse, DeleteRangeResponse, HashKvResponse, HashResponse,
    LeaseGrantResponse, LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, MoveLeaderResponse, PutResponse, RangeResponse, ResponseHeader, StatusResponse,
    TxnResponse,
};

use crate::apply::CommandResponse;

/// An etcd response: the header etcd puts on it.
pub trait Headed {
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! headed {
    ($($response:ty),+ $(,)?) => {$(
        impl Headed for $response {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        }
    )+};
}

headed!(
    RangeResponse,
    PutResponse,
    DeleteRangeResponse,
    TxnResponse,
    CompactionResponse,
    LeaseGrantResponse,
    LeaseRevokeResponse,
    LeaseLeasesResponse,
    LeaseTimeToLiveResponse,
    LeaseKeepAliveResponse,
    AlarmResponse,
    StatusResponse,
    DefragmentResponse,
    HashResponse,
    HashKvResponse,
    MoveLeaderResponse,
);

/// The applier's answer of the kind `$variant` as the value a handler uses; an answer of any
/// other kind is handed back.
macro_rules! answer_of_kind {
    ($($variant:ident => $answer:ty),+ $(,)?) => {$(
        impl TryFrom<CommandResponse> for $answer {
            type Error = CommandResponse;

            fn try_from(answer: CommandResponse) -> Result<Self, CommandResponse> {
                match answer {
                    CommandResponse::$variant(value) => Ok(value),
                    other => Err(other),
                }
            }
        }
    )+};
}

answer_of_kind!(
    Put => PutResponse,
    DeleteRange => DeleteRangeResponse,
    Txn => TxnResponse,
    Compact => CompactionResponse,
    LeaseGrant => LeaseGrantResponse,
    LeaseRevoke => LeaseRevokeResponse,
    Alarm => AlarmResponse,
    // An auth change; Authenticate's token.
    Auth => Option<String>,
);
