//! Which files of a WAL directory to read (etcd's `readWALNames`, `searchIndex`,
//! `isValidSeq` and `selectWALFiles`).
//!
//! etcd names each file `%016x-%016x.wal`: a sequence number that grows by one per file, and
//! the index of the first entry the file was cut for (the last entry saved before it, plus
//! one). So the entries after index `after` start in the last file whose index is `<= after`,
//! and run through every later file.

use std::path::{Path, PathBuf};

use crate::error::WalError;

/// One WAL file, as named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalFile {
    pub path: PathBuf,
    pub seq: u64,
    /// The raft index in the name: no entry before it was written to this file, except entries
    /// that overwrote uncommitted ones.
    pub index: u64,
}

/// Parses `<16 hex digits>-<16 hex digits>.wal`; `None` for anything else.
pub fn parse_wal_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (seq, index) = stem.split_once('-')?;
    let hex = |s: &str| {
        if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            u64::from_str_radix(s, 16).ok()
        } else {
            None
        }
    };
    Some((hex(seq)?, hex(index)?))
}

/// Every WAL file in `dir`, in sequence order. Other files (`0.tmp` made ahead by etcd's file
/// pipeline, `*.wal.broken` left by its repair) are ignored, as etcd ignores them; a `.wal`
/// file with a name etcd would not write is an error.
pub fn list_wal_files(dir: &Path) -> Result<Vec<WalFile>, WalError> {
    let io = |source| WalError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for dirent in std::fs::read_dir(dir).map_err(io)? {
        let dirent = dirent.map_err(io)?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else {
            // etcd's names are ASCII; a non-UTF-8 name is not one of them.
            continue;
        };
        if !name.ends_with(".wal") {
            continue;
        }
        let path = dirent.path();
        let Some((seq, index)) = parse_wal_name(name) else {
            return Err(WalError::BadFileName { path });
        };
        files.push(WalFile { path, seq, index });
    }
    // etcd sorts the names as strings; with fixed-width hex that is (seq, index) order.
    files.sort_by_key(|f| (f.seq, f.index));
    Ok(files)
}

/// The files that hold the entries after index `after`: from the last file whose name index
/// is `<= after` to the end, with sequence numbers that grow by one.
pub fn select_wal_files(dir: &Path, after: u64) -> Result<Vec<WalFile>, WalError> {
    let mut files = list_wal_files(dir)?;
    let Some(oldest) = files.first() else {
        return Err(WalError::NoWalFiles { dir: dir.to_path_buf() });
    };
    let Some(start) = files.iter().rposition(|f| f.index <= after) else {
        return Err(WalError::NoFileForIndex {
            oldest: oldest.path.clone(),
            oldest_index: oldest.index,
            after,
        });
    };
    let selected = files.split_off(start);
    for pair in selected.windows(2) {
        if let [prev, next] = pair {
            // etcd's isValidSeq lets any file follow sequence 0; a gap there would still break
            // the CRC chain, so demanding +1 everywhere rejects nothing etcd could read.
            if prev.seq.checked_add(1) != Some(next.seq) {
                return Err(WalError::SeqGap {
                    path: next.path.clone(),
                    prev_seq: prev.seq,
                    found: next.seq,
                });
            }
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_wal_name("0000000000000000-0000000000000000.wal"), Some((0, 0)));
        assert_eq!(parse_wal_name("000000000000000a-00000000000000CA.wal"), Some((10, 202)));
        assert_eq!(parse_wal_name("0-0.wal"), None);
        assert_eq!(parse_wal_name("0000000000000000-0000000000000000.wal.broken"), None);
        assert_eq!(parse_wal_name("0000000000000000_0000000000000000.wal"), None);
        assert_eq!(parse_wal_name("+000000000000000-0000000000000000.wal"), None);
    }
}
