//! Taking over a stopped etcd member's data dir in place: `rkv` started with the flags and
//! `--data-dir` of a single etcd member finds etcd's layout (`member/snap/db`, `member/wal/`),
//! imports the db, replays every WAL entry committed after the db's consistent index (so that a
//! kill -9'd etcd loses nothing it acknowledged), and from then on runs on its own store inside
//! that data dir.
//!
//! etcd's files are only ever read. rkv's own files (`db/`, then the `rkv-member` marker, which
//! is written last) go beside `member/`; until the marker exists the directory is still etcd's,
//! so a crash at any point of the import leaves it importable again from the start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rkv_proto::etcdserverpb::ResponseHeader;
use rkv_storage::{AppliedIndex, Store};
use tracing::{info, warn};

use super::import::{import, EtcdDb, ImportOptions};
use super::{EtcdFileError, BUCKET_MEMBERS, BUCKET_META, META_CONSISTENT_INDEX};
use crate::apply::{Applier, Proposed};
use crate::auth::{AuthStore, SimpleTokens, Tokens};
use crate::identity::{self, Identity};
use crate::lease::Lessor;
use crate::metrics::{Metrics, MetricsLevel};
use crate::watch::WatchHub;

/// Entries applied per storage batch during the replay.
const REPLAY_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("taking over etcd data dir {dir}: {source}")]
    File {
        dir: String,
        #[source]
        source: EtcdFileError,
    },
    #[error("taking over etcd data dir {dir}: {detail}")]
    Refused { dir: String, detail: String },
    #[error("taking over etcd data dir {dir}: {source}")]
    Wal {
        dir: String,
        #[source]
        source: rkv_etcd_wal::WalError,
    },
    #[error("taking over etcd data dir {dir}: {source}")]
    Identity {
        dir: String,
        #[source]
        source: identity::IdentityError,
    },
}

/// Where a stopped etcd member keeps its bbolt db inside its data dir.
pub fn etcd_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap").join("db")
}

/// Whether `data_dir` holds a stopped etcd member that rkv has not taken over yet.
pub fn is_etcd_data_dir(data_dir: &Path) -> bool {
    etcd_db_path(data_dir).is_file() && !identity::is_initialized(data_dir)
}

/// Imports the etcd member in `data_dir` into rkv's store beside it and makes the directory
/// rkv's, with `identity` (computed from the same flags etcd was started with).
pub fn take_over(data_dir: &Path, identity: Identity, bcrypt_cost: u32) -> Result<Identity, TakeoverError> {
    let dir = data_dir.display().to_string();
    let file_err = |source| TakeoverError::File { dir: dir.clone(), source };
    let refused = |detail: String| TakeoverError::Refused { dir: dir.clone(), detail };
    let db_file = etcd_db_path(data_dir);
    let _lock = lock_db(&db_file).map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => {
            refused(format!("etcd is still running on it ({} is locked): stop etcd first", db_file.display()))
        }
        std::fs::TryLockError::Error(source) => {
            file_err(EtcdFileError::Io { path: db_file.display().to_string(), source })
        }
    })?;
    let mapped = super::MappedFile::open(&db_file).map_err(file_err)?;
    let src = EtcdDb::open(&mapped.path, mapped.bytes()).map_err(file_err)?;
    let mut members = 0usize;
    src.for_each(BUCKET_MEMBERS, |_, _| {
        members += 1;
        Ok(())
    })
    .map_err(file_err)?;
    if members > 1 {
        return Err(refused(format!(
            "it is a member of a {members}-member cluster; move a cluster with a snapshot and \
             `rctl snapshot restore` on every member (docs/migrating-from-etcd.md)"
        )));
    }
    let consistent_index = match src.bucket(BUCKET_META).map_err(file_err)? {
        Some(meta) => match meta.get(META_CONSISTENT_INDEX).map_err(|e| file_err(src.bbolt(e)))? {
            Some(v) => u64::from_be_bytes(
                v.try_into().map_err(|_| refused(format!("consistent_index is {} bytes", v.len())))?,
            ),
            None => 0,
        },
        None => 0,
    };
    let wal_dir = data_dir.join("member").join("wal");
    let wal = rkv_etcd_wal::read_wal(&wal_dir, consistent_index)
        .map_err(|source| TakeoverError::Wal { dir: dir.clone(), source })?;
    if let Some(torn) = &wal.torn_tail {
        // etcd repairs such a tail the same way: a record whose write never completed was
        // never acknowledged.
        warn!(wal = %wal_dir.display(), detail = %torn, "ignoring the torn tail of etcd's WAL");
    }
    if let Some(meta) = &wal.metadata {
        if meta.node_id != identity.member_id {
            warn!(
                etcd_member = format!("{:x}", meta.node_id),
                flags_member = format!("{:x}", identity.member_id),
                "etcd's WAL names another member ID than the flags give; rkv uses the flags'"
            );
        }
    }

    // What an interrupted takeover left of rkv's own store goes; etcd's files stay.
    let db_path = identity::db_path(data_dir);
    if db_path.exists() {
        warn!(path = %db_path.display(), "removing the store of an interrupted takeover");
        std::fs::remove_dir_all(&db_path)
            .map_err(|e| refused(format!("cannot remove {}: {e}", db_path.display())))?;
    }
    let store = Arc::new(Store::open(&db_path).map_err(|e| file_err(e.into()))?);
    let summary = import(&src, &store, ImportOptions::default()).map_err(file_err)?;
    let replayed = replay(&store, &wal, bcrypt_cost).map_err(refused)?;
    // The raft position and members were etcd's; the new member's come from its flags.
    store.clear_cluster_state(&[crate::auth::AUTH_PREFIX]).map_err(|e| file_err(e.into()))?;
    let revision = store.current_revision().map_err(|e| file_err(e.into()))?;
    drop(store);
    let identity = identity::write_marker(data_dir, identity)
        .map_err(|source| TakeoverError::Identity { dir: dir.clone(), source })?;
    info!(
        data_dir = %dir,
        history = summary.history,
        leases = summary.leases,
        consistent_index,
        replayed,
        commit = wal.hard_state.commit,
        revision,
        "took over the stopped etcd member: imported member/snap/db and the committed WAL entries \
         after its consistent index; etcd's files are unchanged"
    );
    Ok(identity)
}

/// A shared lock on etcd's db for as long as the import runs. A running etcd holds bbolt's
/// exclusive lock on it, so a live member is refused, and an etcd started meanwhile waits.
fn lock_db(db_file: &Path) -> Result<std::fs::File, std::fs::TryLockError> {
    let file = std::fs::File::open(db_file).map_err(std::fs::TryLockError::Error)?;
    file.try_lock_shared()?;
    Ok(file)
}

/// Applies the committed entries after the db's consistent index; returns how many.
fn replay(store: &Arc<Store>, wal: &rkv_etcd_wal::WalContents, bcrypt_cost: u32) -> Result<usize, String> {
    let hub =
        WatchHub::new(store.clone(), ResponseHeader::default(), usize::MAX).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new(MetricsLevel::Basic).map_err(|e| e.to_string())?);
    let tokens = Tokens::Simple(SimpleTokens::new(std::time::Duration::from_secs(300)));
    let auth = Arc::new(AuthStore::new(store, bcrypt_cost, tokens).map_err(|e| e.to_string())?);
    let lessor = Arc::new(Lessor::restore(
        store.leases().map_err(|e| e.to_string())?,
        store.leased_keys().map_err(|e| e.to_string())?,
    ));
    let applier = Applier::new(store.clone(), hub, lessor, metrics, auth).map_err(|e| e.to_string())?;
    let mut batch: Vec<Option<Proposed>> = Vec::with_capacity(REPLAY_BATCH);
    let mut replayed = 0;
    for entry in wal.committed() {
        if entry.entry_type != rkv_etcd_wal::EntryType::Normal {
            continue;
        }
        let proposed =
            super::replay::command(entry.index, &entry.data, bcrypt_cost).map_err(|e| e.to_string())?;
        if proposed.is_some() {
            replayed += 1;
            batch.push(proposed);
        }
        if batch.len() == REPLAY_BATCH {
            applier.apply_batch(&batch, AppliedIndex::default(), b"").map_err(|e| e.to_string())?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        applier.apply_batch(&batch, AppliedIndex::default(), b"").map_err(|e| e.to_string())?;
    }
    // Compactions the log held finish before the store is handed over.
    let compacted = store.compacted_revision().map_err(|e| e.to_string())?;
    if compacted > 0 {
        futures::executor::block_on(applier.wait_compacted(compacted)).map_err(|e| e.to_string())?;
    }
    store.sync_wal().map_err(|e| e.to_string())?;
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An etcd db whose members bucket lists `members` members.
    fn etcd_db(members: usize) -> Vec<u8> {
        let mut w =
            rkv_bbolt::Writer::new(std::io::Cursor::new(Vec::new()), 4096).unwrap_or_else(|e| panic!("{e}"));
        let put =
            |w: &mut rkv_bbolt::Writer<_>, k: &[u8], v: &[u8]| w.put(k, v).unwrap_or_else(|e| panic!("{e}"));
        w.bucket(super::super::BUCKET_KEY).unwrap_or_else(|e| panic!("{e}"));
        w.bucket(BUCKET_MEMBERS).unwrap_or_else(|e| panic!("{e}"));
        for i in 0..members {
            put(&mut w, format!("{i:016x}").as_bytes(), b"{}");
        }
        w.bucket(BUCKET_META).unwrap_or_else(|e| panic!("{e}"));
        put(&mut w, META_CONSISTENT_INDEX, &7u64.to_be_bytes());
        w.finish().unwrap_or_else(|e| panic!("{e}")).0.into_inner()
    }

    fn data_dir(db: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("member/snap")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("member/wal")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(etcd_db_path(dir.path()), db).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    const ID: Identity = Identity { member_id: 1, cluster_id: 2 };

    #[test]
    fn a_cluster_member_is_refused_untouched() {
        let dir = data_dir(&etcd_db(3));
        assert!(is_etcd_data_dir(dir.path()));
        let err = take_over(dir.path(), ID, 4).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("3-member cluster"), "{err}");
        assert!(!identity::db_path(dir.path()).exists());
        assert!(is_etcd_data_dir(dir.path()), "still etcd's, nothing of rkv's written");
    }

    #[test]
    fn a_data_dir_without_wal_segments_is_refused() {
        // etcd writes its WAL before its db: a db without one is not a data dir etcd left.
        let dir = data_dir(&etcd_db(1));
        let err = take_over(dir.path(), ID, 4).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("taking over etcd data dir"), "{err}");
        assert!(!dir.path().join("rkv-member").exists() && !identity::db_path(dir.path()).exists());
    }
}
