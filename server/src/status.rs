//! The one place where errors become gRPC statuses: etcd's codes and exact wire strings
//! (etcd `api/v3rpc/rpctypes/error.go`). Clients compare these strings literally.

use rkv_storage::StorageError;
use tonic::{Code, Status};

use crate::error::ServerError;

impl From<ServerError> for Status {
    fn from(e: ServerError) -> Self {
        Status::from(&e)
    }
}

impl From<&ServerError> for Status {
    fn from(e: &ServerError) -> Self {
        let (code, msg): (Code, String) = match e {
            ServerError::EmptyKey => (Code::InvalidArgument, "etcdserver: key is not provided".into()),
            ServerError::KeyNotFound => (Code::InvalidArgument, "etcdserver: key not found".into()),
            ServerError::ValueProvided => (Code::InvalidArgument, "etcdserver: value is provided".into()),
            ServerError::LeaseProvided => (Code::InvalidArgument, "etcdserver: lease is provided".into()),
            ServerError::TooManyOps => {
                (Code::InvalidArgument, "etcdserver: too many operations in txn request".into())
            }
            ServerError::DuplicateKey => {
                (Code::InvalidArgument, "etcdserver: duplicate key given in txn request".into())
            }
            ServerError::InvalidSortOption => {
                (Code::InvalidArgument, "etcdserver: invalid sort option".into())
            }
            ServerError::LeaseNotFound => (Code::NotFound, "etcdserver: requested lease not found".into()),
            ServerError::LeaseExists => (Code::FailedPrecondition, "etcdserver: lease already exists".into()),
            ServerError::LeaseTtlTooLarge => (Code::OutOfRange, "etcdserver: too large lease TTL".into()),
            ServerError::RequestTooLarge => {
                (Code::InvalidArgument, "etcdserver: request is too large".into())
            }
            ServerError::MessageTooLarge { size, limit } => (
                Code::ResourceExhausted,
                format!("grpc: received message larger than max ({size} vs. {limit})"),
            ),
            ServerError::NoSpace => {
                (Code::ResourceExhausted, "etcdserver: mvcc: database space exceeded".into())
            }
            ServerError::Stopped => (Code::Unavailable, "etcdserver: server stopped".into()),
            ServerError::NotImplemented(what) => {
                (Code::Unimplemented, format!("rkv: {what} is not implemented yet"))
            }
            ServerError::UnexpectedResponse => {
                (Code::Internal, "etcdserver: unexpected apply response".into())
            }
            ServerError::Storage(StorageError::Compacted) => {
                (Code::OutOfRange, "etcdserver: mvcc: required revision has been compacted".into())
            }
            ServerError::Storage(StorageError::FutureRevision) => {
                (Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision".into())
            }
            ServerError::MemberExists => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            ServerError::PeerUrlExists => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            ServerError::MemberNotFound => (Code::NotFound, format!("etcdserver: {e}")),
            ServerError::MemberBadUrls => (Code::InvalidArgument, format!("etcdserver: {e}")),
            ServerError::MemberNotLearner => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            ServerError::LearnerNotReady => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            ServerError::TooManyLearners => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            ServerError::NoLeader => (Code::Unavailable, "etcdserver: no leader".into()),
            ServerError::NotLeader | ServerError::BadLeaderTransferee => {
                (Code::FailedPrecondition, format!("etcdserver: {e}"))
            }
            ServerError::LeaderTransferTimeout => (Code::DeadlineExceeded, format!("etcdserver: {e}")),
            ServerError::PermissionDenied => (Code::PermissionDenied, format!("etcdserver: {e}")),
            ServerError::InvalidAuthToken => (Code::Unauthenticated, format!("etcdserver: {e}")),
            ServerError::AuthFailed
            | ServerError::UserEmpty
            | ServerError::RoleEmpty
            | ServerError::PermissionNotGiven
            | ServerError::InvalidAuthMgmt
            | ServerError::AuthOldRevision => (Code::InvalidArgument, format!("etcdserver: {e}")),
            ServerError::AuthNotEnabled
            | ServerError::UserNotFound
            | ServerError::UserAlreadyExist
            | ServerError::RoleNotFound
            | ServerError::RoleAlreadyExist
            | ServerError::RoleNotGranted
            | ServerError::PermissionNotGranted
            | ServerError::RootUserNotExist
            | ServerError::RootRoleNotExist => (Code::FailedPrecondition, format!("etcdserver: {e}")),
            ServerError::Internal(_) => (Code::Internal, format!("etcdserver: {e}")),
            ServerError::Unknown(text) => (Code::Unknown, text.clone()),
            ServerError::MissingLeaderKey
            | ServerError::ElectionNoLeader
            | ServerError::ElectionNotLeader
            | ServerError::SessionExpired => (Code::Unknown, e.to_string()),
            ServerError::Timeout => (Code::Unavailable, "etcdserver: request timed out".into()),
            ServerError::LeaderChanged => (Code::Unavailable, "etcdserver: leader changed".into()),
            ServerError::Remote(status) => return status.clone(),
            ServerError::Storage(other) => {
                tracing::error!(error = %other, "storage error");
                (Code::Internal, format!("etcdserver: {other}"))
            }
            ServerError::EtcdFile(other) => {
                tracing::error!(error = %other, "snapshot file error");
                (Code::Internal, format!("etcdserver: {other}"))
            }
        };
        Status::new(code, msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_strings_are_etcds() {
        let cases = [
            (ServerError::EmptyKey, Code::InvalidArgument, "etcdserver: key is not provided"),
            (
                ServerError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                ServerError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (ServerError::LeaseNotFound, Code::NotFound, "etcdserver: requested lease not found"),
            (
                ServerError::Storage(StorageError::Compacted),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                ServerError::Storage(StorageError::FutureRevision),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
        ];
        for (err, code, msg) in cases {
            let status = Status::from(err);
            assert_eq!((status.code(), status.message()), (code, msg));
        }
    }

    #[test]
    fn consensus_failures_are_known_after_crossing_the_peer_link() {
        for local in [ServerError::Timeout, ServerError::LeaderChanged, ServerError::NoLeader] {
            let remote = ServerError::Remote(Status::from(local));
            assert!(remote.is_consensus_failure(), "{remote}");
        }
        for refused in [ServerError::LeaseNotFound, ServerError::NoSpace, ServerError::PermissionDenied] {
            assert!(!refused.is_consensus_failure(), "{refused}");
            assert!(!ServerError::Remote(Status::from(refused)).is_consensus_failure());
        }
        // The same code with another message is not one of them.
        let other = ServerError::Remote(Status::new(Code::Unavailable, "etcdserver: something else"));
        assert!(!other.is_consensus_failure());
    }
}
