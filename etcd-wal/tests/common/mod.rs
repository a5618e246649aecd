//! A small WAL writer for the tests, written from etcd's `wal/encoder.go` and `wal.go`: frames
//! (8-byte length word, record, zero padding to 8 bytes) and the rolling CRC-32C chain, with
//! files cut as etcd cuts them (CRC record, metadata, hard state at the head of each file).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use prost::Message;
use rkv_etcd_wal::pb;

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

pub const NODE_ID: u64 = 0x1111;
pub const CLUSTER_ID: u64 = 0x2222;

/// Appends one frame holding `record` to `out` (etcd's `encodeFrameSize` + `write`).
pub fn frame(out: &mut Vec<u8>, record: &pb::Record) {
    let data = record.encode_to_vec();
    let pad = (8 - data.len() % 8) % 8;
    let mut word = data.len() as u64;
    if pad != 0 {
        word |= (0x80 | pad as u64) << 56;
    }
    out.extend_from_slice(&word.to_le_bytes());
    out.extend_from_slice(&data);
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// One WAL directory being written: the current file's bytes and the CRC chain.
pub struct WalWriter {
    /// Finished files: (seq, index in the name, bytes).
    pub files: Vec<(u64, u64, Vec<u8>)>,
    cur: Vec<u8>,
    cur_name: (u64, u64),
    crc: u32,
    metadata: Vec<u8>,
    state: pb::HardState,
    last_index: u64,
}

impl WalWriter {
    /// etcd's `Create`: CRC record 0, metadata, and the empty snapshot record.
    pub fn create() -> Self {
        let metadata = pb::Metadata { node_id: NODE_ID, cluster_id: CLUSTER_ID }.encode_to_vec();
        let mut w = WalWriter {
            files: Vec::new(),
            cur: Vec::new(),
            cur_name: (0, 0),
            crc: 0,
            metadata,
            state: pb::HardState::default(),
            last_index: 0,
        };
        w.crc_record(0);
        w.record(pb::METADATA_TYPE, w.metadata.clone());
        w.snapshot(0, 0);
        w
    }

    pub fn crc_record(&mut self, crc: u32) {
        self.crc = crc;
        frame(&mut self.cur, &pb::Record { r#type: pb::CRC_TYPE, crc, data: Vec::new() });
    }

    /// Any record but a CRC one: extends the chain over `data`.
    pub fn record(&mut self, r#type: i64, data: Vec<u8>) {
        self.crc = crc32c::crc32c_append(self.crc, &data);
        frame(&mut self.cur, &pb::Record { r#type, crc: self.crc, data });
    }

    pub fn entry_of(&mut self, term: u64, index: u64, entry_type: pb::EntryType, data: Vec<u8>) {
        let e = pb::Entry { r#type: entry_type as i32, term, index, data };
        self.record(pb::ENTRY_TYPE, e.encode_to_vec());
        self.last_index = index;
    }

    /// A normal entry whose data names it, so tests can tell writes apart.
    pub fn entry(&mut self, term: u64, index: u64) {
        self.entry_of(term, index, pb::EntryType::Normal, entry_data(term, index));
    }

    pub fn state(&mut self, term: u64, vote: u64, commit: u64) {
        self.state = pb::HardState { term, vote, commit };
        self.record(pb::STATE_TYPE, self.state.encode_to_vec());
    }

    pub fn snapshot(&mut self, index: u64, term: u64) {
        let conf_state = (index > 0).then(|| pb::ConfState { voters: vec![NODE_ID], ..Default::default() });
        self.record(pb::SNAPSHOT_TYPE, pb::Snapshot { index, term, conf_state }.encode_to_vec());
    }

    /// etcd's `cut`: the next file is named after the next index and starts with the chain's
    /// value, the metadata and the last hard state.
    pub fn cut(&mut self) {
        let done = std::mem::take(&mut self.cur);
        self.files.push((self.cur_name.0, self.cur_name.1, done));
        self.cur_name = (self.cur_name.0 + 1, self.last_index + 1);
        let crc = self.crc;
        self.crc_record(crc);
        self.record(pb::METADATA_TYPE, self.metadata.clone());
        let s = self.state;
        self.record(pb::STATE_TYPE, s.encode_to_vec());
    }

    /// All files, the current one last.
    pub fn finish(mut self) -> Vec<(u64, u64, Vec<u8>)> {
        let cur = std::mem::take(&mut self.cur);
        self.files.push((self.cur_name.0, self.cur_name.1, cur));
        self.files
    }
}

pub fn entry_data(term: u64, index: u64) -> Vec<u8> {
    format!("t{term}i{index}").into_bytes()
}

pub fn wal_name(seq: u64, index: u64) -> String {
    format!("{seq:016x}-{index:016x}.wal")
}

/// Writes the files into `dir`; returns their paths.
pub fn write_files(dir: &Path, files: &[(u64, u64, Vec<u8>)]) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for (seq, index, bytes) in files {
        let p = dir.join(wal_name(*seq, *index));
        std::fs::write(&p, bytes)?;
        paths.push(p);
    }
    Ok(paths)
}

/// The frames of a WAL file's bytes: (offset, record length, padding), up to the first zero
/// length word or the end.
pub fn frames(bytes: &[u8]) -> Vec<(usize, usize, usize)> {
    let mut out = Vec::new();
    let mut off = 0;
    while let Some(w) = bytes.get(off..off + 8) {
        let word = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        if word == 0 {
            break;
        }
        let len = (word & 0x00ff_ffff_ffff_ffff) as usize;
        let pad = if word >> 63 == 1 { ((word >> 56) & 7) as usize } else { 0 };
        out.push((off, len, pad));
        off += 8 + len + pad;
    }
    out
}

/// The record in the frame at `off` (test data is trusted).
pub fn record_at(bytes: &[u8], frame: (usize, usize, usize)) -> pb::Record {
    let (off, len, _) = frame;
    pb::Record::decode(&bytes[off + 8..off + 8 + len]).unwrap_or_else(|e| panic!("frame at {off}: {e}"))
}
