//! Errors of the server layer: etcd's request errors plus the storage layer's, and what can be
//! wrong with an etcd file (they are here, below every module that reads or writes one, so
//! that this module depends on no other of the crate).
//! `status.rs` maps each to etcd's gRPC code and wire string; nothing else formats them.

use rkv_storage::StorageError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("key is not provided")]
    EmptyKey,
    #[error("key not found")]
    KeyNotFound,
    #[error("value is provided")]
    ValueProvided,
    #[error("lease is provided")]
    LeaseProvided,
    #[error("too many operations in txn request")]
    TooManyOps,
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    #[error("invalid sort option")]
    InvalidSortOption,
    #[error("requested lease not found")]
    LeaseNotFound,
    #[error("lease already exists")]
    LeaseExists,
    #[error("too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("request is too large")]
    RequestTooLarge,
    /// A request bigger than the gRPC receive limit (grpc-go's wording, which etcd returns).
    #[error("received message larger than max ({size} vs. {limit})")]
    MessageTooLarge { size: usize, limit: usize },
    #[error("database space exceeded")]
    NoSpace,
    #[error("server stopped")]
    Stopped,
    /// An RPC of the etcd API that a later issue implements.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    /// The apply layer answered a request with a response of another kind (a bug).
    #[error("unexpected apply response")]
    UnexpectedResponse,
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Writing etcd's database file (a snapshot) failed.
    #[error(transparent)]
    EtcdFile(#[from] EtcdFileError),
    #[error("member ID already exist")]
    MemberExists,
    #[error("Peer URLs already exists")]
    PeerUrlExists,
    #[error("member not found")]
    MemberNotFound,
    #[error("given member URLs are invalid")]
    MemberBadUrls,
    #[error("can only promote a learner member")]
    MemberNotLearner,
    #[error("can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("too many learner members in cluster")]
    TooManyLearners,
    /// The cluster has no leader (etcd's `ErrNoLeader`).
    #[error("no leader")]
    NoLeader,
    /// The proposal was not committed in time (etcd's `ErrTimeout`).
    #[error("request timed out")]
    Timeout,
    /// The leader changed while the request was in flight (etcd's `ErrLeaderChanged`).
    #[error("leader changed")]
    LeaderChanged,
    /// A request only the leader serves (MoveLeader) reached a follower (etcd's `ErrNotLeader`).
    #[error("not leader")]
    NotLeader,
    #[error("bad leader transferee")]
    BadLeaderTransferee,
    #[error("request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    #[error("authentication is not enabled")]
    AuthNotEnabled,
    #[error("authentication failed, invalid user ID or password")]
    AuthFailed,
    #[error("invalid auth token")]
    InvalidAuthToken,
    #[error("user name is empty")]
    UserEmpty,
    #[error("user name not found")]
    UserNotFound,
    #[error("user name already exists")]
    UserAlreadyExist,
    #[error("role name is empty")]
    RoleEmpty,
    #[error("role name not found")]
    RoleNotFound,
    #[error("role name already exists")]
    RoleAlreadyExist,
    #[error("permission denied")]
    PermissionDenied,
    #[error("role is not granted to the user")]
    RoleNotGranted,
    #[error("permission is not granted to the role")]
    PermissionNotGranted,
    #[error("permission not given")]
    PermissionNotGiven,
    #[error("invalid auth management")]
    InvalidAuthMgmt,
    #[error("root user does not exist")]
    RootUserNotExist,
    #[error("root user does not have root role")]
    RootRoleNotExist,
    #[error("revision of auth store is old")]
    AuthOldRevision,
    /// The lock and election services' own errors (etcd's `concurrency` recipes and
    /// `v3election` server), which etcd returns as they are: codes.Unknown with the bare text.
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("election: no leader")]
    ElectionNoLeader,
    #[error("election: not leader")]
    ElectionNotLeader,
    #[error("session: session is expired")]
    SessionExpired,
    /// A failure inside the server that is no client's fault (etcd answers codes.Internal).
    #[error("{0}")]
    Internal(String),
    /// An error etcd has no gRPC status for: grpc-go answers codes.Unknown with its bare text.
    #[error("{0}")]
    Unknown(String),
    /// An error the leader answered a forwarded request with, as its gRPC status.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
}

/// What is wrong with an etcd file; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum EtcdFileError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid database: {source}")]
    Bbolt {
        path: String,
        #[source]
        source: rkv_bbolt::Error,
    },
    #[error("{path}: not an etcd database: {detail}")]
    Schema { path: String, detail: String },
    /// Restore options that cannot go together or do not fit the file.
    #[error("{0}")]
    Options(String),
    #[error("{0}")]
    Storage(#[from] rkv_storage::StorageError),
}

impl ServerError {
    /// A proposal that consensus failed (etcd's `proposals_failed_total` counts these), not one
    /// the apply refused. A leader's failure arrives at the member that forwarded the proposal
    /// as the status it maps to (status.rs), so that is compared too.
    pub fn is_consensus_failure(&self) -> bool {
        const FAILURES: [fn() -> ServerError; 4] = [
            || ServerError::Timeout,
            || ServerError::LeaderChanged,
            || ServerError::NoLeader,
            || ServerError::Stopped,
        ];
        match self {
            ServerError::Timeout
            | ServerError::LeaderChanged
            | ServerError::NoLeader
            | ServerError::Stopped => true,
            ServerError::Remote(status) => FAILURES.iter().any(|failure| {
                let mapped = tonic::Status::from(failure());
                mapped.code() == status.code() && mapped.message() == status.message()
            }),
            _ => false,
        }
    }
}

pub type Result<T, E = ServerError> = std::result::Result<T, E>;
