//! The WAL of a real etcd 3.5.1 member (tests/data/etcd-3.5.1-wal/README.txt says how it was
//! made), checked against what etcd's own reader made of it (etcd-readall.txt there).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use prost::Message;
use rkv_etcd_wal::{pb, read_wal, EntryType, WalError};

const WAL_NAME: &str = "0000000000000000-0000000000000000.wal";
const MEMBER_ID: u64 = 8813575065840868852;
const CLUSTER: u64 = 5577419299952351277;
/// The last record's data ends here (its padding at 26336); zeros follow up to 28672.
const LAST_NONZERO: usize = 26329;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/etcd-3.5.1-wal")
}

fn fixture_bytes() -> std::io::Result<Vec<u8>> {
    std::fs::read(fixture_dir().join(WAL_NAME))
}

/// A temp WAL dir holding `bytes` as the fixture's file.
fn dir_with(bytes: &[u8]) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join(WAL_NAME), bytes)?;
    Ok(dir)
}

fn expectations() -> std::io::Result<String> {
    std::fs::read_to_string(fixture_dir().join("etcd-readall.txt"))
}

/// etcdserverpb.InternalRaftRequest, only the fields the last entry uses.
#[derive(Clone, PartialEq, Message)]
struct InternalRaftRequest {
    #[prost(message, optional, tag = "100")]
    header: Option<RequestHeader>,
    #[prost(message, optional, tag = "1100")]
    auth_user_add: Option<AuthUserAddRequest>,
}
#[derive(Clone, PartialEq, Message)]
struct RequestHeader {
    #[prost(uint64, tag = "1")]
    id: u64,
}
#[derive(Clone, PartialEq, Message)]
struct AuthUserAddRequest {
    #[prost(string, tag = "1")]
    name: String,
}

#[test]
fn reads_what_etcd_reads() -> TestResult {
    let c = read_wal(&fixture_dir(), 0)?;
    assert_eq!(c.metadata, Some(pb::Metadata { node_id: MEMBER_ID, cluster_id: CLUSTER }));
    assert_eq!(c.hard_state, pb::HardState { term: 2, vote: MEMBER_ID, commit: 260 });
    assert_eq!(c.torn_tail, None);
    assert_eq!(c.last_index, 260);

    // Every entry as etcd's ReadAll listed it: "index term N|C len(data)".
    let want: Vec<String> = expectations()?
        .lines()
        .filter(|l| l.starts_with(|ch: char| ch.is_ascii_digit()))
        .map(str::to_owned)
        .collect();
    let got: Vec<String> = c
        .entries
        .iter()
        .map(|e| {
            let t = match e.entry_type {
                EntryType::Normal => "N",
                EntryType::ConfChange => "C",
                EntryType::ConfChangeV2 => "C2",
            };
            format!("{} {} {t} {}", e.index, e.term, e.data.len())
        })
        .collect();
    assert_eq!(got, want);
    assert!(c.entries.iter().zip(1..).all(|(e, i)| e.index == i), "contiguous from 1");
    assert_eq!(c.committed().count(), 260);

    // The last entry is `etcdctl user add x:y`.
    let last = c.entries.last().ok_or("no entries")?;
    assert_eq!((last.index, last.term, last.entry_type), (260, 2, EntryType::Normal));
    let req = InternalRaftRequest::decode(last.data.as_slice())?;
    assert_eq!(req.auth_user_add.map(|a| a.name), Some("x".to_owned()));
    assert!(req.header.is_some_and(|h| h.id != 0));

    // Snapshot records: the bootstrap one and one per --snapshot-count 100 entries.
    let voters = Some(pb::ConfState { voters: vec![MEMBER_ID], ..Default::default() });
    let snaps: Vec<_> = c.snapshots.iter().map(|s| (s.index, s.term, s.conf_state.clone())).collect();
    assert_eq!(snaps, vec![(0, 0, None), (101, 2, voters.clone()), (202, 2, voters)]);
    assert_eq!(c.snapshot.map(|s| s.index), Some(0));
    Ok(())
}

#[test]
fn after_filters_entries() -> TestResult {
    for (after, snapshot) in [(1, 0), (100, 0), (101, 101), (202, 202), (259, 202), (260, 202), (1000, 202)] {
        let c = read_wal(&fixture_dir(), after)?;
        let want: Vec<u64> = (after + 1..=260).collect();
        assert_eq!(c.entries.iter().map(|e| e.index).collect::<Vec<_>>(), want, "after {after}");
        assert_eq!(c.snapshot.map(|s| s.index), Some(snapshot), "after {after}");
        assert_eq!(c.after_term, (after <= 260).then_some(if after == 1 { 1 } else { 2 }), "after {after}");
        assert_eq!(c.hard_state.commit, 260);
        assert_eq!(c.last_index, 260);
    }
    Ok(())
}

#[test]
fn truncated_copies_read_as_etcd_read_them() -> TestResult {
    let bytes = fixture_bytes()?;
    let mut checked = 0;
    for line in expectations()?.lines().filter(|l| l.starts_with("trunc ")) {
        // "trunc N commit C entries E err=<nil>"
        let f: Vec<&str> = line.split_whitespace().collect();
        let (n, commit, entries): (usize, u64, usize) = (f[1].parse()?, f[3].parse()?, f[5].parse()?);
        let dir = dir_with(&bytes[..n])?;
        let c = read_wal(dir.path(), 0)?;
        assert_eq!((c.hard_state.commit, c.entries.len()), (commit, entries), "{line}");
        // Whatever ended inside a record is a torn tail; past the written part, zeros end it.
        let ends: Vec<usize> = frames(&bytes).iter().map(|&(off, len, pad)| off + 8 + len + pad).collect();
        let written = ends.last().copied().unwrap_or(0);
        assert!(written > LAST_NONZERO);
        assert_eq!(c.torn_tail.is_some(), n < written && !ends.contains(&n), "{line}: {:?}", c.torn_tail);
        checked += 1;
    }
    assert_eq!(checked, 57);
    Ok(())
}

#[test]
fn torn_last_record() -> TestResult {
    let bytes = fixture_bytes()?;
    let fr = frames(&bytes);
    let &(last_off, last_len, _) = fr.last().ok_or("no frames")?;
    // Cut in the middle of the last record (the hard state that commits 260).
    let dir = dir_with(&bytes[..last_off + 8 + last_len / 2])?;
    let c = read_wal(dir.path(), 0)?;
    let torn = c.torn_tail.ok_or("no torn tail")?;
    assert!(torn.contains(WAL_NAME) && torn.contains(&format!("offset {last_off}")), "{torn}");
    assert_eq!((c.entries.len(), c.hard_state.commit), (260, 259));

    // A torn write as a crash leaves it in a preallocated file: the length is there, a sector
    // of the record is still zeros. Take the last entry record that spans a sector boundary.
    let &(off, len, pad) = fr
        .iter()
        .rev()
        .find(|&&(off, len, _)| {
            record_at(&bytes, (off, len, 0)).r#type == pb::ENTRY_TYPE
                && (off + 8) / 512 != (off + 8 + len - 1) / 512
        })
        .ok_or("no entry record spans a sector")?;
    let index = pb::Entry::decode(record_at(&bytes, (off, len, pad)).data.as_slice())?.index;
    let mut torn_bytes = bytes[..off + 8 + len + pad].to_vec();
    let boundary = (off + 8) / 512 * 512 + 512;
    torn_bytes[boundary..].fill(0);
    torn_bytes.resize(bytes.len(), 0);
    let dir = dir_with(&torn_bytes)?;
    let c = read_wal(dir.path(), 0)?;
    assert!(c.torn_tail.is_some());
    assert_eq!(c.entries.last().map(|e| e.index), Some(index - 1));
    Ok(())
}

#[test]
fn a_flipped_byte_mid_file_is_an_error_naming_the_file() -> TestResult {
    let bytes = fixture_bytes()?;
    let fr = frames(&bytes);
    let &(off, len, _) = fr.get(fr.len() / 2).ok_or("no frames")?;
    // The last byte of a record is its data's (field 3 comes last).
    let mut bad = bytes.clone();
    bad[off + 8 + len - 1] ^= 0x40;
    let dir = dir_with(&bad)?;
    match read_wal(dir.path(), 0) {
        Err(e @ WalError::CrcMismatch { offset, .. }) => {
            assert_eq!(offset, off as u64);
            let msg = e.to_string();
            assert!(msg.contains(WAL_NAME) && msg.contains(&format!("offset {off}")), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}

#[test]
fn damage_at_every_sector_never_panics() -> TestResult {
    let bytes = fixture_bytes()?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(WAL_NAME);
    for sector in (0..bytes.len()).step_by(512) {
        // Truncated there, zeroed from there, one sector zeroed, one sector of 0xff.
        let mut variants = vec![bytes[..sector].to_vec()];
        let mut v = bytes.clone();
        v[sector..].fill(0);
        variants.push(v);
        for fill in [0u8, 0xff] {
            let mut v = bytes.clone();
            let end = (sector + 512).min(v.len());
            v[sector..end].fill(fill);
            variants.push(v);
        }
        for v in variants {
            std::fs::write(&path, &v)?;
            // Ok or Err, both fine: the point is no panic, and errors name the file.
            if let Err(e) = read_wal(dir.path(), 0) {
                assert!(e.to_string().contains(WAL_NAME), "{e}");
            }
        }
    }
    Ok(())
}
