//! Reads the write-ahead log of a stopped etcd 3.4-3.7 member (`<data-dir>/member/wal`).
//!
//! rkv takes over an etcd data dir from its bbolt db, which holds the state machine applied
//! through its `consistent_index`. Entries after that index that raft had committed are only in
//! the WAL; [`read_wal`] returns them, as etcd itself would replay them on restart:
//!
//! - the files are chosen by the index in their names, as etcd's `selectWALFiles` does;
//! - every record's CRC-32C chain is checked, across files;
//! - a later write of an index replaces the earlier entry and everything after it (a new
//!   leader overwrote uncommitted entries, figure 7 of the raft paper);
//! - a torn last record of the last file (a crash mid-write) is dropped, as etcd's `Repair`
//!   drops it, and reported in [`WalContents::torn_tail`]; any other damage is an error.
//!
//! Only entries up to the last hard state's commit index are committed
//! ([`WalContents::committed`]); the rest may still have been overwritten by the cluster.

mod decoder;
mod error;
mod files;
pub mod pb;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use prost::Message;

pub use error::WalError;
pub use files::{list_wal_files, parse_wal_name, select_wal_files, WalFile};
pub use pb::{ConfState, EntryType, HardState, Metadata};

/// A snapshot record: the raft position (and, since 3.5, membership) of a snapshot etcd took
/// or received. etcd starts reading its WAL at the newest one it also has a `.snap` file for.
pub type WalSnapshot = pb::Snapshot;

/// A raft log entry, with its type checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub entry_type: EntryType,
    /// For a normal entry an `etcdserverpb.InternalRaftRequest` (empty for the entry each new
    /// leader appends); for a conf change a `raftpb.ConfChange` / `ConfChangeV2`.
    pub data: Vec<u8>,
}

/// What [`read_wal`] read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WalContents {
    /// The member and cluster ids (every file repeats the same metadata record).
    pub metadata: Option<Metadata>,
    /// The last hard state record read; all zeros if the selected files hold none.
    pub hard_state: HardState,
    /// The last snapshot record in the files read with index `<= after`: where raft's log
    /// could start.
    pub snapshot: Option<WalSnapshot>,
    /// Every snapshot record in the selected files, in the order written.
    pub snapshots: Vec<WalSnapshot>,
    /// The entries with index `> after`, contiguous from `after + 1`, as the last write of each
    /// index left them.
    pub entries: Vec<Entry>,
    /// The term of the entry at index `after`, if the selected files hold it (the raft log id
    /// of the last applied entry).
    pub after_term: Option<u64>,
    /// The index of the last entry written, wherever it is (raft's last log index); 0 if the
    /// files hold no entry. Less than `after` if the WAL ends before the index asked for.
    pub last_index: u64,
    /// Some(description) if the last file ended in a torn record that was ignored.
    pub torn_tail: Option<String>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

impl WalContents {
    /// The entries raft had committed: those with index `<= hard_state.commit`.
    pub fn committed(&self) -> impl Iterator<Item = &Entry> {
        let commit = self.hard_state.commit;
        self.entries.iter().take_while(move |e| e.index <= commit)
    }
}

/// Reads every WAL file in `dir` that can hold entries after index `after` (etcd's selection by
/// the index in the file name), checks the CRC chain, and returns the entries with index
/// `> after`.
///
/// `after` is where the state machine is (the bbolt db's consistent index), not necessarily a
/// snapshot point, so unlike etcd's `ReadAll` no snapshot record at `after` is required. An
/// empty WAL (nothing written) reads as no records: `metadata` is then `None`. Entries that do
/// not follow on from `after` (the WAL was purged past it, or a received snapshot skipped
/// over it) are an error, as in etcd; the caller decides what `after > hard_state.commit` or
/// `after > last_index` means.
pub fn read_wal(dir: &Path, after: u64) -> Result<WalContents, WalError> {
    let files = select_wal_files(dir, after)?;
    let mut replay = Replay { after, out: WalContents::default(), metadata_bytes: None };
    let mut crc = 0u32;
    let count = files.len();
    for (i, wal_file) in files.iter().enumerate() {
        let path = wal_file.path.as_path();
        let io = |source| WalError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        replay.out.files.push(path.to_path_buf());
        let is_last = i + 1 == count;
        let end = decoder::decode_file(
            path,
            BufReader::with_capacity(1 << 16, file),
            len,
            is_last,
            &mut crc,
            |d| replay.record(path, d),
        )?;
        if let decoder::FileEnd::Torn(what) = end {
            replay.out.torn_tail = Some(what);
        }
    }
    Ok(replay.out)
}

/// The state of a read, fed one record at a time (etcd's `ReadAll` loop).
struct Replay {
    after: u64,
    out: WalContents,
    /// etcd compares metadata records byte for byte.
    metadata_bytes: Option<Vec<u8>>,
}

impl Replay {
    fn record(&mut self, path: &Path, decoded: decoder::Decoded) -> Result<(), WalError> {
        let decoder::Decoded { record, offset } = decoded;
        let bad = |what: String| WalError::corrupt(path, offset, what);
        match record.r#type {
            pb::ENTRY_TYPE => {
                let e = pb::Entry::decode(record.data.as_slice())
                    .map_err(|e| bad(format!("entry record: not a raftpb.Entry: {e}")))?;
                let entry_type = EntryType::try_from(e.r#type).map_err(|_| {
                    bad(format!("entry {} has unknown raftpb.EntryType {}", e.index, e.r#type))
                })?;
                self.entry(Entry { term: e.term, index: e.index, entry_type, data: e.data }, &bad)
            }
            pb::STATE_TYPE => {
                self.out.hard_state = HardState::decode(record.data.as_slice())
                    .map_err(|e| bad(format!("state record: not a raftpb.HardState: {e}")))?;
                Ok(())
            }
            pb::METADATA_TYPE => {
                if let Some(seen) = &self.metadata_bytes {
                    if *seen != record.data {
                        // etcd's ErrMetadataConflict: files of two different members.
                        return Err(bad("metadata record differs from the one before it".into()));
                    }
                    return Ok(());
                }
                let m = Metadata::decode(record.data.as_slice())
                    .map_err(|e| bad(format!("metadata record: not an etcdserverpb.Metadata: {e}")))?;
                self.out.metadata = Some(m);
                self.metadata_bytes = Some(record.data);
                Ok(())
            }
            // The decoder checked it against the chain and reset the chain to it.
            pb::CRC_TYPE => Ok(()),
            pb::SNAPSHOT_TYPE => {
                let s = WalSnapshot::decode(record.data.as_slice())
                    .map_err(|e| bad(format!("snapshot record: not a walpb.Snapshot: {e}")))?;
                if s.index <= self.after {
                    self.out.snapshot = Some(s.clone());
                }
                self.out.snapshots.push(s);
                Ok(())
            }
            other => Err(bad(format!("unexpected record type {other}"))),
        }
    }

    /// etcd's `ents = append(ents[:e.Index-start-1], e)`, with raft's rule that a write at any
    /// index, also one `<= after`, cuts off everything after it.
    fn entry(&mut self, e: Entry, bad: &dyn Fn(String) -> WalError) -> Result<(), WalError> {
        let after = self.after;
        let entries = &mut self.out.entries;
        self.out.last_index = e.index;
        if e.index <= after {
            // A rewrite below `after` (only possible while it was uncommitted) drops what
            // followed it; the entry at `after`, if rewritten, comes again later.
            entries.clear();
            if e.index == after {
                self.out.after_term = Some(e.term);
            } else {
                self.out.after_term = None;
            }
            return Ok(());
        }
        // index > after, so no underflow; the position may exceed usize only in a bogus file.
        let pos = usize::try_from(e.index - after - 1).unwrap_or(usize::MAX);
        if pos > entries.len() {
            let have = u64::try_from(entries.len()).unwrap_or(u64::MAX).saturating_add(after);
            return Err(bad(format!(
                "entry {} (term {}) follows entry {have}: the entries in between are missing (etcd's ErrSliceOutOfRange)",
                e.index, e.term
            )));
        }
        entries.truncate(pos);
        entries.push(e);
        Ok(())
    }
}
