pub mod endpoint;
pub mod kv;
pub mod txn;
