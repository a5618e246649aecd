//! `snapshot status` of an etcd database, computed as etcdutl computes it, so that the same
//! file gives the same hash, revision, key count and size with either tool.

use super::import::EtcdDb;
use super::*;

/// What etcdutl's `snapshot status` reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStatus {
    /// CRC-32C over every bucket's name and every key and value in it, in bbolt's order.
    pub hash: u32,
    /// The main revision of the last entry of the `key` bucket.
    pub revision: i64,
    /// Entries in all buckets.
    pub total_keys: u64,
    /// The database's size in bytes (its pages in use; a trailer is not counted).
    pub total_size: u64,
    /// The storage version etcd 3.6 and later record, empty before.
    pub version: String,
}

pub fn status(src: &EtcdDb<'_>) -> Result<FileStatus, EtcdFileError> {
    // etcdutl checks the file's integrity (bbolt's tx.Check) before it summarises it.
    src.db.check().map_err(|e| src.bbolt(e))?;
    let mut hash = 0u32;
    let mut revision = 0i64;
    let mut total_keys = 0u64;
    for name in src.db.bucket_names().map_err(|e| src.bbolt(e))? {
        hash = crc32c::crc32c_append(hash, name);
        let is_key = name == BUCKET_KEY;
        src.for_each(name, |k, v| {
            hash = crc32c::crc32c_append(hash, k);
            hash = crc32c::crc32c_append(hash, v);
            if is_key {
                // etcdutl reads the main revision of any key it finds there.
                if let Some(main) = k.get(..8).and_then(|b| b.try_into().ok()) {
                    revision = i64::from_be_bytes(main);
                }
            }
            total_keys += 1;
            Ok(())
        })?;
    }
    Ok(FileStatus {
        hash,
        revision,
        total_keys,
        total_size: src.db.high_water_mark().saturating_mul(src.db.page_size() as u64),
        version: src.storage_version()?.unwrap_or_default(),
    })
}
