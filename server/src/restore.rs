//! `rctl snapshot restore`: a data dir for one member of a new cluster, built from a snapshot
//! (etcdutl's restore). The file is etcd's (a bbolt database, from `etcdctl snapshot save` of
//! etcd or rkv, or a `member/snap/db` copied from a data dir with --skip-hash-check) or a
//! snapshot saved by an earlier rkv in its own format. The snapshot's keys, history, revision,
//! leases and auth are kept; its raft position and members are dropped, and the member and
//! cluster IDs come from the flags, so all members restored from one file with the same
//! --initial-cluster start as one new cluster.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::{parse_initial_cluster, same_urls};
use crate::etcd_files::import::{import, EtcdDb, ImportOptions};
use crate::etcd_files::status::FileStatus;
use crate::etcd_files::MappedFile;
use crate::identity::{self, Identity};

/// What `snapshot restore` takes (etcdutl's flags).
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub snapshot: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    /// `name=url,...`
    pub initial_cluster: String,
    pub initial_cluster_token: String,
    pub initial_advertise_peer_urls: Vec<String>,
    pub skip_hash_check: bool,
    /// etcdutl 3.6's --bump-revision and --mark-compacted (etcd files only).
    pub import: ImportOptions,
}

/// What a restore produced: the revision the new cluster continues from and the IDs.
#[derive(Clone, Copy, Debug)]
pub struct Restored {
    pub revision: i64,
    pub member_id: u64,
    pub cluster_id: u64,
}

const SHA_LEN: usize = 32;
/// rkv's own snapshot format (storage/src/snapshot.rs) starts with this.
const RKV_MAGIC: &[u8] = b"RKVSNAP1";

/// Reads a snapshot held in memory, telling `progress` (bytes read, total) as it goes.
struct Counting<'a, 'p> {
    inner: Cursor<&'a [u8]>,
    progress: &'p mut dyn FnMut(u64, u64),
}

impl std::io::Read for Counting<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(self.inner.position(), self.inner.get_ref().len() as u64);
        Ok(n)
    }
}

impl std::io::Seek for Counting<'_, '_> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

/// Checks the file, then writes the data dir; a bad file leaves nothing behind.
/// `progress` hears (bytes imported, total) while the data dir is written.
pub fn restore(req: &RestoreRequest, progress: &mut dyn FnMut(u64, u64)) -> Result<Restored, String> {
    if req.snapshot.is_dir() {
        // etcdutl opens the path and fails on its first read.
        return Err(format!("read {}: is a directory", req.snapshot.display()));
    }
    let file = MappedFile::open(&req.snapshot).map_err(|e| go_file_error("open", &req.snapshot, e))?;
    let body = snapshot_body(file.bytes(), req.skip_hash_check)?;
    let etcd = if body.starts_with(RKV_MAGIC) {
        if req.import != ImportOptions::default() {
            return Err("--bump-revision and --mark-compacted need an etcd snapshot file".into());
        }
        rkv_storage::Store::verify_snapshot(Cursor::new(body)).map_err(|e| e.to_string())?;
        None
    } else {
        Some(EtcdDb::open(&file.path, body).map_err(|e| e.to_string())?)
    };
    // As etcdutl: an empty directory may be restored into, anything else is refused.
    let empty = std::fs::read_dir(&req.data_dir).map(|mut d| d.next().is_none());
    if req.data_dir.exists() && !matches!(empty, Ok(true)) {
        return Err(format!(
            "data-dir {:?} not empty or could not be read",
            req.data_dir.display().to_string()
        ));
    }
    let members = parse_initial_cluster(&req.initial_cluster).map_err(|e| e.to_string())?;
    let Some((_, urls)) = members.iter().find(|(name, _)| *name == req.name) else {
        return Err(format!("couldn't find local name {:?} in the initial cluster configuration", req.name));
    };
    if !same_urls(urls, &req.initial_advertise_peer_urls) {
        return Err(format!(
            "--initial-cluster has {}={} but missing from --initial-advertise-peer-urls={}",
            req.name,
            urls.join(","),
            req.initial_advertise_peer_urls.join(",")
        ));
    }
    let token = &req.initial_cluster_token;
    let ids: Vec<u64> = members.iter().map(|(_, urls)| identity::compute_member_id(urls, token)).collect();
    let id = Identity {
        member_id: identity::compute_member_id(&req.initial_advertise_peer_urls, token),
        cluster_id: identity::compute_cluster_id(&ids),
    };
    let written = (|| -> Result<i64, String> {
        identity::open_data_dir(&req.data_dir, id).map_err(|e| e.to_string())?;
        let store = rkv_storage::Store::open(identity::db_path(&req.data_dir)).map_err(|e| e.to_string())?;
        match &etcd {
            Some(src) => {
                let summary = import(src, &store, req.import).map_err(|e| e.to_string())?;
                progress(body.len() as u64, body.len() as u64);
                Ok(summary.current_rev)
            }
            None => {
                let input = Counting { inner: Cursor::new(body), progress };
                store.import_snapshot(input).map_err(|e| e.to_string())?;
                // Users, roles and the auth switch survive a restore, as etcd's do.
                store.clear_cluster_state(&[crate::auth::AUTH_PREFIX]).map_err(|e| e.to_string())?;
                store.current_revision().map_err(|e| e.to_string())
            }
        }
    })();
    match written {
        Ok(revision) => Ok(Restored { revision, member_id: id.member_id, cluster_id: id.cluster_id }),
        Err(e) => {
            // Never leave a half-restored member behind.
            let _ = std::fs::remove_dir_all(&req.data_dir);
            Err(e)
        }
    }
}

/// `snapshot status` of a file, as etcdutl reports it (etcd's files) or from rkv's own format.
pub fn status(path: &Path) -> Result<FileStatus, String> {
    // etcdutl stats the file first.
    std::fs::metadata(path).map_err(|e| format!("stat {}: {}", path.display(), go_io_error(&e)))?;
    let file = MappedFile::open(path).map_err(|e| go_file_error("open", path, e))?;
    let bytes = file.bytes();
    let body = snapshot_body(bytes, true)?;
    if body.starts_with(RKV_MAGIC) {
        let stats = rkv_storage::Store::snapshot_stats(Cursor::new(body)).map_err(|e| e.to_string())?;
        return Ok(FileStatus {
            hash: crc32c::crc32c(body),
            revision: stats.revision,
            total_keys: stats.records,
            total_size: bytes.len() as u64,
            version: String::new(),
        });
    }
    let src = EtcdDb::open(&file.path, body).map_err(|e| e.to_string())?;
    crate::etcd_files::status::status(&src).map_err(|e| e.to_string())
}

/// The snapshot without etcd's SHA-256 trailer, which must match unless the check is skipped.
/// As etcdutl decides it, a file has a trailer when its size is 32 past a multiple of 512 (a
/// bbolt file is a whole number of pages); a file without one (a `member/snap/db` copied from
/// a data dir) needs --skip-hash-check.
fn snapshot_body(bytes: &[u8], skip_hash_check: bool) -> Result<&[u8], String> {
    let has_hash = bytes.len() % 512 == SHA_LEN;
    if !has_hash {
        if skip_hash_check {
            return Ok(bytes);
        }
        return Err("snapshot missing hash but --skip-hash-check=false".into());
    }
    let (body, trailer) = bytes.split_at(bytes.len() - SHA_LEN);
    if !skip_hash_check {
        let digest = Sha256::digest(body);
        if digest.as_slice() != trailer {
            return Err(format!("expected sha256 {}, got {}", go_bytes(trailer), go_bytes(&digest)));
        }
    }
    Ok(body)
}

/// A file that cannot be opened, in the words of Go's os package (`open F: no such file or
/// directory`), as etcdutl reports it; other errors as they are.
fn go_file_error(op: &str, path: &Path, e: crate::etcd_files::EtcdFileError) -> String {
    match e {
        crate::etcd_files::EtcdFileError::Io { source, .. } => {
            format!("{op} {}: {}", path.display(), go_io_error(&source))
        }
        other => other.to_string(),
    }
}

/// The text Go gives the common errno values (Rust adds "(os error N)" and capitals).
fn go_io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        std::io::ErrorKind::IsADirectory => "is a directory".into(),
        _ => e.to_string(),
    }
}

/// A byte slice as Go's `%v` prints it (`[1 2 3]`), as etcdutl's messages show hashes.
fn go_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(|x| x.to_string()).collect();
    format!("[{}]", parts.join(" "))
}
