//! The frame layer of one WAL file, as etcd's `wal/decoder.go` reads it.
//!
//! A file is a run of frames: an 8-byte little-endian length word, then a `walpb.Record` and
//! zero padding up to an 8-byte boundary. The low 56 bits of the word are the record's length;
//! when bit 63 is set, the low 3 bits of the top byte are the padding's length (etcd pads so a
//! length word never straddles a sector, and so can never itself be torn). A zero word ends the
//! written part: etcd preallocates each file (64 MB of zeros) and writes into it.
//!
//! Every record but a CRC record extends a CRC-32C chain over the record's data, and holds the
//! chain's value; a CRC record (the first record of every file) holds the chain's value at the
//! end of the previous file and resets the chain to it, which is how the chain crosses files.

use std::io::Read;
use std::path::Path;

use prost::Message;

use crate::error::WalError;
use crate::pb;

/// The length word of a frame.
const FRAME_BYTES: u64 = 8;
/// etcd's `minSectorSize`: the unit a torn write leaves zeroed.
const SECTOR: u64 = 512;

/// A record that decoded and passed its CRC check, and where its frame starts.
pub(crate) struct Decoded {
    pub(crate) record: pb::Record,
    pub(crate) offset: u64,
}

/// How reading one file ended.
pub(crate) enum FileEnd {
    /// End of file or a zero length word (the unwritten, preallocated rest of the file).
    Clean,
    /// The last file ends in a record that was being written when etcd stopped. etcd's
    /// `Repair` truncates the file there and carries on, so the record and all after it are
    /// dropped. The string says where and why.
    Torn(String),
}

/// Reads the records of one file, continuing the CRC chain in `crc`, and hands each valid one
/// to `each`. `len` is the file's length: no length word is trusted beyond it. A damaged
/// record is an error, except in the last file, where damage that looks like a torn write
/// (etcd's `isTornEntry`, or a file that ends inside a frame) ends the file as [`FileEnd::Torn`].
pub(crate) fn decode_file(
    path: &Path,
    mut reader: impl Read,
    len: u64,
    is_last_file: bool,
    crc: &mut u32,
    mut each: impl FnMut(Decoded) -> Result<(), WalError>,
) -> Result<FileEnd, WalError> {
    let mut offset = 0u64;
    loop {
        // `offset <= len` holds: it only grows by frames that were checked to fit.
        let left = len.saturating_sub(offset);
        if left == 0 {
            return Ok(FileEnd::Clean);
        }
        let damaged = |what: String| -> Result<FileEnd, WalError> {
            if is_last_file {
                Ok(FileEnd::Torn(format!(
                    "{}: offset {offset}: {what}; the last {left} bytes of the file were ignored, as etcd's repair truncates them",
                    path.display()
                )))
            } else {
                Err(WalError::corrupt(path, offset, what))
            }
        };
        if left < FRAME_BYTES {
            return damaged(format!("the file ends {left} bytes into a frame's 8-byte length word"));
        }
        let mut word = [0u8; FRAME_BYTES as usize];
        read_exact(&mut reader, &mut word, path, offset)?;
        let word = u64::from_le_bytes(word);
        if word == 0 {
            return Ok(FileEnd::Clean);
        }
        let (rec_len, pad) = frame_size(word);
        // rec_len < 2^56 and pad < 8: the sum cannot overflow.
        let body_len = rec_len + pad;
        // left >= FRAME_BYTES was checked above.
        if body_len > left - FRAME_BYTES {
            return damaged(format!(
                "the frame announces a {rec_len}-byte record and {pad} bytes of padding, but only {} bytes follow",
                left - FRAME_BYTES
            ));
        }
        // Fits in the file, so it fits in memory's address space on any platform that could
        // read the file; still, no `as` cast.
        let body_usize = usize::try_from(body_len).map_err(|_| {
            WalError::corrupt(path, offset, format!("a {body_len}-byte record does not fit in memory"))
        })?;
        let mut body = vec![0u8; body_usize];
        read_exact(&mut reader, &mut body, path, offset + FRAME_BYTES)?;
        // pad <= body_len, so the slice is the record's bytes and never empty by accident.
        let rec_bytes = body.get(..body_usize.saturating_sub(pad_usize(pad))).unwrap_or(&[]);

        let record = match pb::Record::decode(rec_bytes) {
            Ok(r) => r,
            Err(e) => {
                if is_last_file && is_torn(&body, offset + FRAME_BYTES) {
                    return damaged(format!("a torn write: a sector of the record is zeros ({e})"));
                }
                return Err(WalError::corrupt(path, offset, format!("not a walpb.Record: {e}")));
            }
        };

        if record.r#type == pb::CRC_TYPE {
            // etcd skips the check when its chain is still 0: reading then started at this
            // file, so there is no previous file's value to compare with.
            if *crc != 0 && record.crc != *crc {
                return Err(WalError::CrcMismatch {
                    path: path.to_path_buf(),
                    offset,
                    stored: record.crc,
                    computed: *crc,
                });
            }
            *crc = record.crc;
        } else {
            let computed = crc32c::crc32c_append(*crc, &record.data);
            if record.crc != computed {
                if is_last_file && is_torn(&body, offset + FRAME_BYTES) {
                    return damaged(format!(
                        "a torn write: a sector of the record is zeros (CRC {:#010x}, expected {computed:#010x})",
                        record.crc
                    ));
                }
                return Err(WalError::CrcMismatch {
                    path: path.to_path_buf(),
                    offset,
                    stored: record.crc,
                    computed,
                });
            }
            *crc = computed;
        }

        each(Decoded { record, offset })?;
        offset += FRAME_BYTES + body_len;
    }
}

/// Splits a length word into the record's length and the padding's (etcd's `decodeFrameSize`).
pub(crate) fn frame_size(word: u64) -> (u64, u64) {
    let rec_len = word & 0x00ff_ffff_ffff_ffff;
    let pad = if word >> 63 == 1 { (word >> 56) & 0x7 } else { 0 };
    (rec_len, pad)
}

fn pad_usize(pad: u64) -> usize {
    // `pad` is 3 bits wide.
    usize::from(u8::try_from(pad & 0x7).unwrap_or(0))
}

/// etcd's `isTornEntry`: a write torn by a crash leaves whole sectors unwritten, i.e. zero (the
/// file was preallocated with zeros). `body` starts at file offset `file_offset`; it is split at
/// sector boundaries, and any all-zero piece means the record was torn.
fn is_torn(body: &[u8], file_offset: u64) -> bool {
    let mut rest = body;
    let mut at = file_offset;
    while !rest.is_empty() {
        let to_boundary = SECTOR - at % SECTOR;
        let n = usize::try_from(to_boundary).unwrap_or(usize::MAX).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        if chunk.iter().all(|&b| b == 0) {
            return true;
        }
        rest = tail;
        at += to_boundary;
    }
    false
}

fn read_exact(reader: &mut impl Read, buf: &mut [u8], path: &Path, offset: u64) -> Result<(), WalError> {
    reader.read_exact(buf).map_err(|e| {
        // The length was checked against the file's size, so a short read means the file
        // changed under us or the disk failed: an I/O error, not a torn record.
        WalError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                e.kind(),
                format!("reading {} bytes at offset {offset}: {e}", buf.len()),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_size_reads_padding_from_the_top_byte() {
        assert_eq!(frame_size(13 | (0x83 << 56)), (13, 3));
        assert_eq!(frame_size(16), (16, 0));
        // Without bit 63 the top byte is not padding (etcd before 2.1 did not pad).
        assert_eq!(frame_size(13 | (0x03 << 56)), (13, 0));
    }

    #[test]
    fn torn_is_an_all_zero_sector_piece() {
        assert!(!is_torn(&[], 0));
        assert!(!is_torn(&[1; 600], 8));
        let mut body = vec![1u8; 600];
        // Offsets 8..512 are the first piece; zero the second piece (file offsets 512..608).
        for b in &mut body[504..] {
            *b = 0;
        }
        assert!(is_torn(&body, 8));
        // A zero run that does not cover a whole piece is corruption, not a torn write.
        body[599] = 1;
        assert!(!is_torn(&body, 8));
    }
}
