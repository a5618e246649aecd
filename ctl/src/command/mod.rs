pub mod endpoint;
pub mod kv;
pub mod lease;
pub mod txn;
pub mod watch;
