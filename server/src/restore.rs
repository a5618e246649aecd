//! `rctl snapshot restore`: a data dir for one member of a new cluster, built from a snapshot
//! (etcdutl's restore). The snapshot's keys, history, revision and leases are kept; its raft
//! position and members are dropped, and the member and cluster IDs come from the flags, so all
//! members restored from one file with the same --initial-cluster start as one new cluster.

use std::io::Cursor;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::config::{parse_initial_cluster, same_urls};
use crate::identity::{self, Identity};

/// What `snapshot restore` takes (etcdctl's flags).
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
}

/// What a restore produced: the revision the new cluster continues from and the IDs.
#[derive(Clone, Copy, Debug)]
pub struct Restored {
    pub revision: i64,
    pub member_id: u64,
    pub cluster_id: u64,
}

const SHA_LEN: usize = 32;

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

/// Checks the file completely, then writes the data dir; a bad file leaves nothing behind.
/// `progress` hears (bytes imported, total) while the data dir is written.
pub fn restore(req: &RestoreRequest, progress: &mut dyn FnMut(u64, u64)) -> Result<Restored, String> {
    let bytes = std::fs::read(&req.snapshot).map_err(|e| format!("{}: {e}", req.snapshot.display()))?;
    let body = snapshot_body(&bytes, req.skip_hash_check)?;
    rkv_storage::Store::verify_snapshot(Cursor::new(body)).map_err(|e| e.to_string())?;
    if req.data_dir.exists() {
        return Err(format!("data-dir {:?} exists", req.data_dir.display().to_string()));
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
        let input = Counting { inner: Cursor::new(body), progress };
        store.import_snapshot(input).map_err(|e| e.to_string())?;
        // Users, roles and the auth switch survive a restore, as etcd's do.
        store.clear_cluster_state(&[crate::auth::AUTH_PREFIX]).map_err(|e| e.to_string())?;
        store.current_revision().map_err(|e| e.to_string())
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

/// `snapshot status`: (hash, revision, total keys, total size) of a checked snapshot file.
pub fn status(path: &std::path::Path) -> Result<(u32, i64, u64, u64), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let body = snapshot_body(&bytes, true)?;
    let stats = rkv_storage::Store::snapshot_stats(Cursor::new(body)).map_err(|e| e.to_string())?;
    let hash = crc32c::crc32c(body);
    Ok((hash, stats.revision, stats.records, bytes.len() as u64))
}

/// The snapshot without etcd's SHA-256 trailer, which must match unless the check is skipped.
fn snapshot_body(bytes: &[u8], skip_hash_check: bool) -> Result<&[u8], String> {
    if bytes.len() > SHA_LEN {
        let (body, trailer) = bytes.split_at(bytes.len() - SHA_LEN);
        if Sha256::digest(body).as_slice() == trailer {
            return Ok(body);
        }
        if !skip_hash_check {
            return Err(
                "expected sha256 does not match the snapshot (use --skip-hash-check to ignore)".into()
            );
        }
    }
    if skip_hash_check {
        return Ok(bytes);
    }
    Err("snapshot missing hash but --skip-hash-check=false".into())
}
