//! etcd's database into a new rkv store: the whole MVCC history with its revisions, the
//! compaction marks, leases and auth, exactly as an etcd member restored from the same file
//! would serve them. The raft position, members and alarms are not carried over: the new
//! member's come from its flags (as `etcdutl snapshot restore` does).

use prost::Message;
use rkv_bbolt::{Bucket, Db};
use rkv_proto::authpb::{Role, User};
use rkv_storage::{LoadSummary, Revision, Store};
use tracing::info;

use super::*;
use crate::auth::{ENABLED_KEY, REVISION_KEY, ROLE_PREFIX, USER_PREFIX};

/// etcdutl 3.6's `snapshot restore --bump-revision N --mark-compacted`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportOptions {
    /// Moves the revision this many past the newest in the file, so that revisions clients saw
    /// from a newer incarnation of the data are not handed out again.
    pub bump_revision: u64,
    /// Marks the (bumped) revision compacted, so that watchers and caches holding older
    /// revisions are told to start over.
    pub mark_compacted: bool,
}

/// Why a walk over a bucket ended early: the file could not be read, or the callback failed.
enum Walk {
    Read(rkv_bbolt::Error),
    Stopped(EtcdFileError),
}

impl From<rkv_bbolt::Error> for Walk {
    fn from(e: rkv_bbolt::Error) -> Self {
        Walk::Read(e)
    }
}

/// A checked etcd database, ready to import.
pub struct EtcdDb<'a> {
    pub path: String,
    pub db: Db<'a>,
}

impl<'a> EtcdDb<'a> {
    /// Opens the bbolt file and checks that it has etcd's buckets and no others.
    pub fn open(path: &str, data: &'a [u8]) -> Result<Self, EtcdFileError> {
        let db = Db::open(data).map_err(|source| EtcdFileError::Bbolt { path: path.to_string(), source })?;
        let this = Self { path: path.to_string(), db };
        let names = this.db.bucket_names().map_err(|e| this.bbolt(e))?;
        for name in &names {
            if !BUCKETS.contains(name) {
                return Err(this.schema(format!("unknown bucket {:?}", String::from_utf8_lossy(name))));
            }
        }
        for needed in [BUCKET_KEY, BUCKET_META] {
            if !names.contains(&needed) {
                return Err(this.schema(format!("no {:?} bucket", String::from_utf8_lossy(needed))));
            }
        }
        Ok(this)
    }

    pub fn bbolt(&self, source: rkv_bbolt::Error) -> EtcdFileError {
        EtcdFileError::Bbolt { path: self.path.clone(), source }
    }

    pub fn schema(&self, detail: String) -> EtcdFileError {
        EtcdFileError::Schema { path: self.path.clone(), detail }
    }

    /// A history entry the store refused: the file's fault if the entry is malformed or out
    /// of order, the store's otherwise.
    fn history_error(&self, e: rkv_storage::StorageError) -> EtcdFileError {
        match e {
            rkv_storage::StorageError::Corrupt(detail) => self.schema(detail),
            other => other.into(),
        }
    }

    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, EtcdFileError> {
        self.db.bucket(name).map_err(|e| self.bbolt(e))
    }

    /// Every key/value of a bucket (none if the bucket is missing).
    pub fn for_each(
        &self,
        name: &[u8],
        mut each: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), EtcdFileError>,
    ) -> Result<(), EtcdFileError> {
        let Some(bucket) = self.bucket(name)? else { return Ok(()) };
        bucket.for_each(|k, v| each(k, v).map_err(Walk::Stopped)).map_err(|e| match e {
            Walk::Read(e) => self.bbolt(e),
            Walk::Stopped(e) => e,
        })
    }

    /// A main revision kept in the meta bucket as a revision key (the compaction marks).
    pub fn meta_revision(&self, key: &[u8]) -> Result<Option<i64>, EtcdFileError> {
        let Some(meta) = self.bucket(BUCKET_META)? else { return Ok(None) };
        match meta.get(key).map_err(|e| self.bbolt(e))? {
            None => Ok(None),
            Some(v) => match v.get(..8).and_then(|b| b.try_into().ok()) {
                Some(main) => Ok(Some(i64::from_be_bytes(main))),
                None => {
                    Err(self.schema(format!("meta {:?} is {} bytes", String::from_utf8_lossy(key), v.len())))
                }
            },
        }
    }

    /// The storage version etcd 3.6 and later record (`snapshot status` prints it).
    pub fn storage_version(&self) -> Result<Option<String>, EtcdFileError> {
        let Some(meta) = self.bucket(BUCKET_META)? else { return Ok(None) };
        let v = meta.get(META_STORAGE_VERSION).map_err(|e| self.bbolt(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(v).into_owned()))
    }
}

/// Fills `store` (new and empty) with the file's data. Everything is checked as it is read and
/// the store refuses to open until the import has finished, so a bad file or a crash never
/// leaves a store that looks complete.
pub fn import(src: &EtcdDb<'_>, store: &Store, opts: ImportOptions) -> Result<LoadSummary, EtcdFileError> {
    if (opts.bump_revision > 0) != opts.mark_compacted {
        // etcdutl 3.6's rule and words: the two go together.
        return Err(EtcdFileError::Options("--mark-compacted required if --revision-bump > 0".into()));
    }
    let mut load = store.bulk_load()?;
    let mut newest = None;
    src.for_each(BUCKET_KEY, |k, v| {
        let (rev, tombstone) = Revision::decode_etcd(k)
            .ok_or_else(|| src.schema(format!("bad revision key {k:?} in the key bucket")))?;
        load.history(rev, tombstone, v).map_err(|e| src.history_error(e))?;
        newest = Some(rev);
        Ok(())
    })?;
    src.for_each(BUCKET_LEASE, |k, v| {
        let lease = LeaseRecord::decode(v).map_err(|e| src.schema(format!("bad lease {k:?}: {e}")))?;
        let id =
            k.try_into().map(i64::from_be_bytes).map_err(|_| src.schema(format!("bad lease key {k:?}")))?;
        if id != lease.id {
            return Err(src.schema(format!("lease key {id:x} holds lease {:x}", lease.id)));
        }
        load.lease(lease.id, lease.ttl)?;
        Ok(())
    })?;
    import_auth(src, &mut load)?;

    let finished = src.meta_revision(META_FINISHED_COMPACT)?;
    let mut scheduled = src.meta_revision(META_SCHEDULED_COMPACT)?;
    if opts.bump_revision > 0 {
        // etcdutl writes an empty value at the bumped revision: the history's newest entry,
        // which sets the current revision and which a compaction there keeps.
        let latest = newest.unwrap_or_default();
        let bumped = i64::try_from(opts.bump_revision)
            .ok()
            .and_then(|bump| latest.main.checked_add(bump))
            .map(|main| Revision::new(main, 0))
            .ok_or_else(|| {
                EtcdFileError::Options(format!(
                    "--bump-revision {} overflows the revision",
                    opts.bump_revision
                ))
            })?;
        load.history(bumped, false, &[]).map_err(|e| src.history_error(e))?;
        info!(from = latest.main, to = bumped.main, "bumped the revision");
        if opts.mark_compacted {
            scheduled = Some(bumped.main);
        }
    }
    let summary = load.finish(finished, scheduled)?;
    info!(path = %src.path, ?summary, "imported etcd database");
    Ok(summary)
}

fn import_auth(src: &EtcdDb<'_>, load: &mut rkv_storage::BulkLoad<'_>) -> Result<(), EtcdFileError> {
    if let Some(auth) = src.bucket(BUCKET_AUTH)? {
        if let Some(v) = auth.get(AUTH_ENABLED).map_err(|e| src.bbolt(e))? {
            load.cluster(ENABLED_KEY, if v == [1] { b"1" } else { b"0" })?;
        }
        if let Some(v) = auth.get(AUTH_REVISION).map_err(|e| src.bbolt(e))? {
            let rev: [u8; 8] =
                v.try_into().map_err(|_| src.schema(format!("authRevision is {} bytes", v.len())))?;
            load.cluster(REVISION_KEY, &rev)?;
        }
    }
    // Users and roles are etcd's authpb messages, which rkv keeps as they are.
    let mut key = Vec::new();
    for (bucket, prefix, what) in
        [(BUCKET_AUTH_USERS, USER_PREFIX, "user"), (BUCKET_AUTH_ROLES, ROLE_PREFIX, "role")]
    {
        src.for_each(bucket, |name, v| {
            let valid = if what == "user" { User::decode(v).map(drop) } else { Role::decode(v).map(drop) };
            valid.map_err(|e| src.schema(format!("bad {what} {:?}: {e}", String::from_utf8_lossy(name))))?;
            key.clear();
            key.extend_from_slice(prefix);
            key.extend_from_slice(name);
            load.cluster(&key, v)?;
            Ok(())
        })?;
    }
    Ok(())
}
