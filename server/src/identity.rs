//! The member's identity: member ID, cluster ID and the data directory marker.
//!
//! IDs are computed as etcd computes them for a new cluster (SHA-1 of the sorted peer URLs and
//! the cluster token; the cluster ID from the member IDs), so a default single-member rkv has
//! the same IDs as a default etcd. They are written once into `<data-dir>/rkv-member` and read
//! back on every start; that file is also how rkv recognises a data directory as its own.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use thiserror::Error;

const MARKER: &str = "rkv-member";
const FORMAT: &str = "rkv-data-dir-v1";

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error(
        "data dir {dir} was not written by rkv (it contains {found}); rkv refuses to use or modify it. \
         Point --data-dir at an empty or rkv directory"
    )]
    Foreign { dir: String, found: String },
    #[error("data dir {dir}: {detail}")]
    Corrupt { dir: String, detail: String },
    /// etcd's permission check: a data dir others can read or enter is refused.
    #[error(
        "directory {dir:?} exist, but the permission is {mode:?}. The recommended permission is \"-rwx------\" \
         to prevent possible unprivileged access to the data"
    )]
    Permission { dir: String, mode: String },
    #[error("data dir {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub member_id: u64,
    pub cluster_id: u64,
}

/// etcd's `computeMemberID` for a new cluster: SHA-1 over the sorted peer URLs joined without a
/// separator, then the cluster token; the first 8 bytes, big-endian.
pub fn compute_member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut input = urls.concat().into_bytes();
    input.extend_from_slice(token.as_bytes());
    first_u64(&sha1_smol::Sha1::from(&input).digest().bytes())
}

/// etcd's cluster ID: SHA-1 over the sorted member IDs (8 bytes big-endian each).
pub fn compute_cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let input: Vec<u8> = ids.iter().flat_map(|id| id.to_be_bytes()).collect();
    first_u64(&sha1_smol::Sha1::from(&input).digest().bytes())
}

fn first_u64(hash: &[u8; 20]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(b)
}

/// Creates a directory (and its parents) readable by its owner only, as etcd's TouchDirAll.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Go's `os.FileMode` text for a directory's permission bits (`drwxr-xr-x`).
#[cfg(unix)]
fn go_dir_mode(mode: u32) -> String {
    let bits: String = (0..9)
        .map(|i| {
            let on = mode & (1 << (8 - i)) != 0;
            match (on, i % 3) {
                (false, _) => '-',
                (true, 0) => 'r',
                (true, 1) => 'w',
                (true, _) => 'x',
            }
        })
        .collect();
    format!("d{bits}")
}

/// Refuses a data dir that group or others may access (etcd's CheckDirPermission).
fn check_private(dir: &Path) -> Result<(), IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = fs::metadata(dir)
            .map_err(|source| IdentityError::Io { dir: dir.display().to_string(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::Permission {
                dir: dir.display().to_string(),
                mode: go_dir_mode(mode),
            });
        }
    }
    Ok(())
}

/// Whether `data_dir` already holds an rkv member.
pub fn is_initialized(data_dir: &Path) -> bool {
    data_dir.join(MARKER).exists()
}

/// Where RocksDB lives inside the data dir.
pub fn db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("db")
}

/// Opens the data dir: reads the identity of an rkv dir, initialises an empty or missing one,
/// refuses anything else without touching it.
pub fn open_data_dir(data_dir: &Path, fresh: Identity) -> Result<Identity, IdentityError> {
    let dir = data_dir.display().to_string();
    let io = |source| IdentityError::Io { dir: dir.clone(), source };
    let marker = data_dir.join(MARKER);
    if marker.exists() {
        check_private(data_dir)?;
        let text = fs::read_to_string(&marker).map_err(io)?;
        return parse_marker(&text).ok_or_else(|| IdentityError::Corrupt {
            dir: dir.clone(),
            detail: format!("unreadable {MARKER} file"),
        });
    }
    if data_dir.exists() {
        let entries: Vec<String> = fs::read_dir(data_dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            // Auto-TLS certificates rkv generates before it can initialize the data dir (a
            // joining member needs them to ask its peers who it is).
            .filter(|name| name != "fixtures")
            .collect();
        if !entries.is_empty() {
            let mut found = entries;
            found.sort();
            found.truncate(5);
            return Err(IdentityError::Foreign { dir, found: found.join(", ") });
        }
    }
    create_private_dir(data_dir).map_err(io)?;
    check_private(data_dir)?;
    write_marker(data_dir, fresh)
}

/// Makes `data_dir` rkv's with this identity. Written last by whatever fills a data dir, so
/// that a crash before it leaves a directory rkv does not take for its own.
pub fn write_marker(data_dir: &Path, fresh: Identity) -> Result<Identity, IdentityError> {
    let dir = data_dir.display().to_string();
    let io = |source| IdentityError::Io { dir: dir.clone(), source };
    let marker = data_dir.join(MARKER);
    // Write the marker through a temporary file so a crash never leaves a half-written one.
    let tmp = data_dir.join(format!("{MARKER}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io)?;
    write!(f, "{FORMAT}\nmember_id={:016x}\ncluster_id={:016x}\n", fresh.member_id, fresh.cluster_id)
        .map_err(io)?;
    f.sync_all().map_err(io)?;
    fs::rename(&tmp, &marker).map_err(io)?;
    fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(fresh)
}

fn parse_marker(text: &str) -> Option<Identity> {
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    let mut member_id = None;
    let mut cluster_id = None;
    for line in lines {
        let (k, v) = line.split_once('=')?;
        let v = u64::from_str_radix(v, 16).ok()?;
        match k {
            "member_id" => member_id = Some(v),
            "cluster_id" => cluster_id = Some(v),
            _ => {}
        }
    }
    Some(Identity { member_id: member_id?, cluster_id: cluster_id? })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_match_a_default_etcd() {
        // etcd with default flags: member 8e9e05c52164694d in cluster cdf818194e3a8c32.
        let member = compute_member_id(&["http://localhost:2380".to_string()], "etcd-cluster");
        assert_eq!(format!("{member:x}"), "8e9e05c52164694d");
        assert_eq!(format!("{:x}", compute_cluster_id(&[member])), "cdf818194e3a8c32");
    }

    #[test]
    fn foreign_data_dirs_are_refused_untouched() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        fs::create_dir_all(dir.path().join("member/snap")).unwrap_or_else(|e| panic!("{e}"));
        let id = Identity { member_id: 1, cluster_id: 2 };
        assert!(matches!(open_data_dir(dir.path(), id), Err(IdentityError::Foreign { .. })));
        assert!(!dir.path().join(MARKER).exists());
    }

    #[test]
    fn identity_survives_reopen() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("new");
        let first = Identity { member_id: 7, cluster_id: 9 };
        assert_eq!(open_data_dir(&path, first).ok(), Some(first));
        let other = Identity { member_id: 1, cluster_id: 1 };
        assert_eq!(open_data_dir(&path, other).ok(), Some(first));
    }

    #[cfg(unix)]
    #[test]
    fn data_dirs_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("new");
        let id = Identity { member_id: 7, cluster_id: 9 };
        assert_eq!(open_data_dir(&path, id).ok(), Some(id));
        let mode = |p: &Path| fs::metadata(p).map(|m| m.permissions().mode() & 0o777).unwrap_or(0);
        assert_eq!(mode(&path), 0o700);
        // Opened up afterwards: refused with etcd's message, whether initialized or empty.
        for target in [path.clone(), dir.path().join("empty")] {
            fs::create_dir_all(&target).unwrap_or_else(|e| panic!("{e}"));
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap_or_else(|e| panic!("{e}"));
            let err = open_data_dir(&target, id).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains("but the permission is \"drwxr-xr-x\""), "{err}");
        }
    }
}
