use thiserror::Error;

/// Errors of the storage layer. The first two are etcd's MVCC errors and reach clients (the
/// server maps them to etcd's wire strings); the others mean the member cannot go on.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("storage stopped after an unrecoverable write error")]
    Poisoned,
    #[error("i/o error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
