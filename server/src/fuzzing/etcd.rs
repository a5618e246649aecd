//! Fuzz entry points for etcd's files: the bbolt reader with etcd's schema on top, and the WAL
//! reader with the mapping of its entries to rkv commands.

use rkv_storage::{KeyRange, RangeOptions};

use super::ApplyHarness;
use crate::etcd_files::import::{import, EtcdDb, ImportOptions};
use crate::etcd_files::{replay, status};

impl ApplyHarness {
    /// Input: a bbolt database (an etcd snapshot, without its trailer). Whatever the bytes,
    /// summarising and importing it succeeds or fails with an error; what imports serves reads.
    pub fn etcd_db(&mut self, data: &[u8]) {
        let Ok(src) = EtcdDb::open("fuzz.db", data) else { return };
        let summarised = status::status(&src);
        // The import goes into a new, empty store.
        self.reopen();
        let opts = ImportOptions { bump_revision: 5, mark_compacted: data.len().is_multiple_of(2) };
        let imported = import(&src, self.store(), opts);
        if imported.is_ok() {
            assert!(summarised.is_ok(), "imported a database whose status fails: {summarised:?}");
            let all = self.store().range(KeyRange::Range { start: &[], end: None }, RangeOptions::default());
            assert!(all.is_ok(), "an imported store cannot be read: {all:?}");
        }
        self.reopen();
    }
}

/// Input: one WAL segment. Whatever the bytes, reading it succeeds or fails with an error, and
/// every committed entry maps to a command or to an error.
pub fn etcd_wal(data: &[u8]) {
    // One directory per process (and thread: the corpus replay and fuzzers run one input at a
    // time per thread), its one segment overwritten by each input.
    let dir = std::env::temp_dir().join(format!(
        "rkv-fuzz-wal-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let file = dir.join("0000000000000000-0000000000000000.wal");
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, data)).is_err() {
        return;
    }
    let read = rkv_etcd_wal::read_wal(&dir, 0);
    let _ = std::fs::remove_dir_all(&dir);
    let Ok(wal) = read else { return };
    for entry in wal.committed() {
        let _ = replay::command(entry.index, &entry.data, 4);
    }
}

/// The store's data as etcd's database (what `Maintenance.Snapshot` sends, without the trailer).
pub(super) fn db_seed(store: &rkv_storage::Store, scratch: &std::path::Path) -> Result<Vec<u8>, String> {
    let path = scratch.join("seed.db");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    crate::etcd_files::export::write_snapshot(store, file, "seed.db").map_err(|e| e.to_string())?;
    std::fs::read(&path).map_err(|e| e.to_string())
}
