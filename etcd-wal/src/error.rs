//! Every error names the file (or directory), and for a bad record the byte offset of its
//! frame, so an operator can look at the file with `xxd -s OFFSET`.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: no etcd WAL file (named <16 hex digits>-<16 hex digits>.wal)", .dir.display())]
    NoWalFiles { dir: PathBuf },

    /// A `.wal` name etcd would not have written: refusing beats guessing whether it holds data.
    #[error(
        "{}: the name ends in .wal but is not <seq>-<index>.wal with 16 hex digits each, as etcd names WAL files",
        .path.display()
    )]
    BadFileName { path: PathBuf },

    /// The WAL files that held the entries right after `after` were purged (etcd keeps
    /// `--max-wals` files): those entries are only in the data dir's snapshot.
    #[error(
        "{}: no WAL file can hold the entries after index {after}: the oldest file starts at index {oldest_index}",
        .oldest.display()
    )]
    NoFileForIndex { oldest: PathBuf, oldest_index: u64, after: u64 },

    #[error(
        "{}: sequence number {found:#x} does not follow {prev_seq:#x} of the file before it: a WAL file is missing",
        .path.display()
    )]
    SeqGap { path: PathBuf, prev_seq: u64, found: u64 },

    #[error(
        "{}: offset {offset}: CRC mismatch: the record holds {stored:#010x}, the chain of the records before it gives {computed:#010x}",
        .path.display()
    )]
    CrcMismatch { path: PathBuf, offset: u64, stored: u32, computed: u32 },

    /// Anything else wrong with the record whose frame starts at `offset`.
    #[error("{}: offset {offset}: {what}", .path.display())]
    Corrupt { path: PathBuf, offset: u64, what: String },
}

impl WalError {
    pub(crate) fn corrupt(path: &std::path::Path, offset: u64, what: impl Into<String>) -> Self {
        WalError::Corrupt { path: path.to_path_buf(), offset, what: what.into() }
    }
}
