//! etcdctl's exit codes and error line (`Error: ...` on stderr).

use std::fmt;

use tonic::{Code, Status};

/// etcdctl's exit codes (`pkg/cobrautl/error.go`).
pub const EXIT_ERROR: u8 = 1;
pub const EXIT_BAD_CONNECTION: u8 = 2;
pub const EXIT_INVALID_INPUT: u8 = 3;
pub const EXIT_BAD_FEATURE: u8 = 4;
pub const EXIT_INTERRUPTED: u8 = 5;
pub const EXIT_BAD_ARGS: u8 = 128;

#[derive(Debug)]
pub struct CtlError {
    pub code: u8,
    pub message: String,
}

impl CtlError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    pub fn bad_args(message: impl Into<String>) -> Self {
        Self::new(EXIT_BAD_ARGS, message)
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The text etcd's Go client shows for a status: etcd's own errors by their message alone,
/// anything else in grpc-go's `rpc error: code = ... desc = ...` form.
pub fn status_message(s: &Status) -> String {
    if s.message().starts_with("etcdserver: ") {
        return s.message().to_string();
    }
    format!("rpc error: code = {} desc = {}", code_name(s.code()), s.message())
}

fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

impl From<Status> for CtlError {
    fn from(s: Status) -> Self {
        CtlError::new(EXIT_ERROR, status_message(&s))
    }
}
