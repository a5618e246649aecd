pub mod alarm;
pub mod endpoint;
pub mod kv;
pub mod lease;
pub mod member;
pub mod snapshot;
pub mod txn;
pub mod watch;
