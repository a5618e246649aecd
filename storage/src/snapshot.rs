//! State machine snapshots: a consistent copy of the MVCC data (history, metadata, leases and
//! the server's cluster state) as one self-checking stream, for raft to send to members that
//! are too far behind for the log.
//!
//! Format: `RKVSNAP1`, then records `[cf u8][key len u32][key][value len u32][value]`, then
//! `[0xFF][record count u64][crc32c u32]`, the CRC covering every byte before it, then zeros up
//! to a multiple of 512 bytes (etcdctl 3.5 accepts a snapshot only if its size without the
//! SHA-256 trailer is a multiple of 512, as bbolt files are). Integers are big-endian. An
//! import checks everything before it changes anything.

use std::io::{BufReader, BufWriter, Read, Write};

use rocksdb::{IteratorMode, WriteBatch, WriteOptions};
use tracing::info;

use crate::error::{Result, StorageError};
use crate::store::{Store, CF_CLUSTER, CF_KV, CF_LEASE, CF_META};

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const END: u8 = 0xFF;
/// The column families that make up the state machine, by their record tag.
const STATE_CFS: [&str; 4] = [CF_KV, CF_META, CF_LEASE, CF_CLUSTER];
const ALIGN: u64 = 512;

/// What `snapshot status` reports of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotStats {
    pub records: u64,
    /// The newest revision in the snapshot's history.
    pub revision: i64,
}

fn corrupt(detail: impl Into<String>) -> StorageError {
    StorageError::Corrupt(format!("snapshot: {}", detail.into()))
}

fn io(e: std::io::Error) -> StorageError {
    StorageError::Io { path: "snapshot".into(), source: e }
}

/// Counts and checksums what passes through.
struct Crc<W> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl<R: Read> Read for Crc<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// Writes the snapshot format record by record: the export, and tools (the fuzz targets) that
/// need well-framed snapshots of arbitrary records.
pub struct SnapshotWriter<W: Write> {
    w: Crc<BufWriter<W>>,
    records: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub fn new(out: W) -> Result<Self> {
        let mut w = Crc { inner: BufWriter::new(out), crc: 0, len: 0 };
        w.write_all(MAGIC).map_err(io)?;
        Ok(Self { w, records: 0 })
    }

    /// One record of the column family `tag` (0 kv, 1 meta, 2 lease, 3 cluster).
    pub fn record(&mut self, tag: u8, key: &[u8], value: &[u8]) -> Result<()> {
        let w = &mut self.w;
        w.write_all(&[tag]).map_err(io)?;
        w.write_all(&(key.len() as u32).to_be_bytes()).map_err(io)?;
        w.write_all(key).map_err(io)?;
        w.write_all(&(value.len() as u32).to_be_bytes()).map_err(io)?;
        w.write_all(value).map_err(io)?;
        self.records += 1;
        Ok(())
    }

    /// The end marker, count, checksum and padding.
    pub fn finish(mut self) -> Result<()> {
        let w = &mut self.w;
        w.write_all(&[END]).map_err(io)?;
        w.write_all(&self.records.to_be_bytes()).map_err(io)?;
        let crc = w.crc;
        w.inner.write_all(&crc.to_be_bytes()).map_err(io)?;
        let len = w.len + 4;
        let pad = (ALIGN - len % ALIGN) % ALIGN;
        w.inner.write_all(&vec![0u8; pad as usize]).map_err(io)?;
        w.inner.flush().map_err(io)
    }
}

impl Store {
    /// Writes a point-in-time copy of the state machine to `out` and returns the value that
    /// `cluster_key` had at that same point (the applied position the copy corresponds to).
    pub fn export_snapshot(&self, out: impl Write, cluster_key: &[u8]) -> Result<Option<Vec<u8>>> {
        let snap = self.db.snapshot();
        let mut w = SnapshotWriter::new(out)?;
        for (tag, name) in STATE_CFS.iter().enumerate() {
            let cf = self.cf(name)?;
            for item in snap.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = item?;
                w.record(tag as u8, &k, &v)?;
            }
        }
        w.finish()?;
        Ok(snap.get_cf(self.cf(CF_CLUSTER)?, cluster_key)?)
    }

    /// Checks a snapshot stream and summarises it: its checksum, the newest revision of its
    /// history and how many records it holds (`snapshot status`).
    pub fn snapshot_stats(input: impl Read) -> Result<SnapshotStats> {
        let mut revision = 0i64;
        let records = read_records(input, |tag, k, _| {
            if tag == 0 {
                if let Some((rev, _)) = crate::revision::Revision::decode(k) {
                    revision = revision.max(rev.main);
                }
            }
            Ok(())
        })?;
        Ok(SnapshotStats { records, revision })
    }

    /// Checks a snapshot stream end to end without changing anything.
    pub fn verify_snapshot(input: impl Read) -> Result<u64> {
        read_records(input, |_, _, _| Ok(()))
    }

    /// Replaces the state machine with a snapshot: the stream is verified first (nothing is
    /// changed for a bad one), then the old data is deleted and the new written, and the
    /// in-memory index is rebuilt. Readers see either the old or the new state.
    pub fn import_snapshot(&self, mut input: impl Read + std::io::Seek) -> Result<()> {
        let records = Store::verify_snapshot(&mut input)?;
        input.seek(std::io::SeekFrom::Start(0)).map_err(io)?;
        // Writer, compactor and readers wait until the new state is installed whole.
        let mut writer = self.writer_lock()?;
        let compactor = self.compactor.lock().map_err(|_| StorageError::Poisoned)?;
        let mut state = self.state_write()?;
        // One atomic batch: a crash during an install leaves the old state or the new one,
        // never a mix that claims a raft position it does not hold. The batch holds the whole
        // snapshot in memory (a streamed install with a crash marker is a follow-up).
        let mut batch = WriteBatch::default();
        for name in STATE_CFS {
            let cf = self.cf(name)?;
            for item in self.db.iterator_cf(cf, IteratorMode::Start) {
                batch.delete_cf(cf, item?.0);
            }
        }
        let cfs = STATE_CFS.map(|name| self.cf(name));
        read_records(input, |tag, k, v| {
            let cf = cfs.get(tag as usize).ok_or_else(|| corrupt(format!("unknown record tag {tag}")))?;
            batch.put_cf(cf.as_ref().map_err(|_| corrupt("missing column family"))?, k, v);
            Ok(())
        })?;
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(batch, &opts)?;
        let loaded = self.load()?;
        *state = loaded.state;
        writer.applied = loaded.applied;
        drop(state);
        drop(compactor);
        drop(writer);
        info!(records, "installed snapshot");
        self.resume_compaction(loaded.pending_compaction)
    }
}

fn read_records(input: impl Read, mut each: impl FnMut(u8, &[u8], &[u8]) -> Result<()>) -> Result<u64> {
    let mut r = Crc { inner: BufReader::new(input), crc: 0, len: 0 };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(|_| corrupt("too short"))?;
    if &magic != MAGIC {
        return Err(corrupt("not an rkv snapshot"));
    }
    let mut records = 0u64;
    let mut key = Vec::new();
    let mut value = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(|_| corrupt("truncated"))?;
        if tag[0] == END {
            break;
        }
        if tag[0] as usize >= STATE_CFS.len() {
            return Err(corrupt(format!("unknown record tag {}", tag[0])));
        }
        read_chunk(&mut r, &mut key)?;
        read_chunk(&mut r, &mut value)?;
        each(tag[0], &key, &value)?;
        records += 1;
    }
    let mut count = [0u8; 8];
    r.read_exact(&mut count).map_err(|_| corrupt("truncated"))?;
    let expected_crc = r.crc;
    let mut crc = [0u8; 4];
    r.inner.read_exact(&mut crc).map_err(|_| corrupt("truncated"))?;
    if u64::from_be_bytes(count) != records {
        return Err(corrupt("record count mismatch"));
    }
    if u32::from_be_bytes(crc) != expected_crc {
        return Err(corrupt("checksum mismatch"));
    }
    let mut rest = Vec::new();
    (&mut r.inner).take(ALIGN).read_to_end(&mut rest).map_err(io)?;
    let len = r.len + 4 + rest.len() as u64;
    if !len.is_multiple_of(ALIGN) || rest.len() as u64 >= ALIGN || rest.iter().any(|b| *b != 0) {
        return Err(corrupt("trailing bytes"));
    }
    Ok(records)
}

fn read_chunk(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<()> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| corrupt("truncated"))?;
    let len = u32::from_be_bytes(len) as usize;
    buf.clear();
    // Grow as bytes arrive so that a forged length cannot allocate gigabytes up front.
    r.take(len as u64).read_to_end(buf).map_err(io)?;
    if buf.len() != len {
        return Err(corrupt("truncated"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppliedIndex, Durability, KeyRange, RangeOptions};

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
    }

    #[test]
    fn export_import_round_trip_and_rejects_damage() -> Result<()> {
        let (a, b) = (tmp(), tmp());
        let src = Store::open(a.path())?;
        let mut w = src.writer()?;
        let mut t = w.txn();
        t.put(b"k1", b"v1".to_vec(), 0)?;
        t.end();
        let mut t = w.txn();
        t.put(b"k1", b"v2".to_vec(), 0)?;
        t.put(b"k2", b"x".to_vec(), 0)?;
        t.end();
        w.put_cluster(b"raft/applied", b"pos")?;
        w.commit(AppliedIndex { term: 1, index: 2 }, Durability::Sync)?;
        let mut bytes = Vec::new();
        assert_eq!(src.export_snapshot(&mut bytes, b"raft/applied")?, Some(b"pos".to_vec()));

        let dst = Store::open(b.path())?;
        let mut w = dst.writer()?;
        w.txn().put(b"old", b"gone".to_vec(), 0)?;
        w.commit(AppliedIndex::default(), Durability::Sync)?;
        for bad in [
            Vec::new(),
            bytes[..bytes.len() - 1].to_vec(),
            {
                let mut b = bytes.clone();
                b[12] ^= 1;
                b
            },
            b"RKVSNAP0".to_vec(),
        ] {
            assert!(dst.import_snapshot(std::io::Cursor::new(bad)).is_err());
            assert_eq!(dst.range(KeyRange::Single(b"old"), RangeOptions::default())?.kvs.len(), 1);
        }
        dst.import_snapshot(std::io::Cursor::new(bytes))?;
        assert_eq!(dst.current_revision()?, 3);
        assert!(dst.range(KeyRange::Single(b"old"), RangeOptions::default())?.kvs.is_empty());
        let old = dst.range(KeyRange::Single(b"k1"), RangeOptions { rev: 2, ..Default::default() })?;
        assert_eq!(old.kvs[0].value, b"v1");
        assert_eq!(dst.applied_index()?, AppliedIndex { term: 1, index: 2 });
        assert_eq!(dst.cluster_get(b"raft/applied")?, Some(b"pos".to_vec()));
        Ok(())
    }
}
