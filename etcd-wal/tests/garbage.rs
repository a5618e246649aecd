//! Untrusted bytes never panic the reader: random files, and the real fixture with random
//! damage. Errors must name the file.

mod common;

use std::path::Path;

use common::*;
use proptest::prelude::*;
use rkv_etcd_wal::read_wal;

const WAL0: &str = "0000000000000000-0000000000000000.wal";

fn fixture_bytes() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/etcd-3.5.1-wal").join(WAL0);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Writes `files` (name, bytes) to a temp dir and reads it; any error must name one of them.
fn read_files(files: &[(&str, &[u8])]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
    match read_wal(dir.path(), 0) {
        Ok(c) => {
            // Whatever was read is a contiguous run of entries.
            for pair in c.entries.windows(2) {
                prop_assert_eq!(pair[0].index + 1, pair[1].index);
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(files.iter().any(|(name, _)| msg.contains(name)), "{}", msg);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_files(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        read_files(&[(WAL0, &bytes)])?;
    }

    /// A frame with a random length word (any length, any padding bits) after valid records.
    #[test]
    fn random_length_words(word in any::<u64>(), tail in proptest::collection::vec(any::<u8>(), 0..2048), at in 0usize..40) {
        let bytes = fixture_bytes();
        let fr = frames(&bytes);
        let (off, _, _) = fr[at % fr.len()];
        let mut v = bytes[..off].to_vec();
        v.extend_from_slice(&word.to_le_bytes());
        v.extend_from_slice(&tail);
        read_files(&[(WAL0, &v)])?;
    }

    #[test]
    fn damaged_fixture(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut v = fixture_bytes();
        for (at, b) in flips {
            let i = at.index(v.len());
            v[i] = b;
        }
        if let Some(cut) = cut {
            v.truncate(cut.index(v.len()));
        }
        read_files(&[(WAL0, &v)])?;
    }

    /// The real file, then a second file of garbage (the chain must cross into it).
    #[test]
    fn garbage_second_file(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let first = fixture_bytes();
        read_files(&[(WAL0, &first), (&wal_name(1, 261), &bytes)])?;
    }
}
