//! `Revision`: the position of one change in the store's history.
//!
//! Every write request that changes something gets a new `main` revision; the changes inside
//! one request (the puts and deletes of a txn) share it and are told apart by `sub`. On disk a
//! revision is the key of the `kv` column family, big-endian so that RocksDB's byte order is
//! revision order, with a trailing `t` when the change is a deletion (a tombstone), as etcd does.

use std::fmt;

/// Length of an encoded revision without the tombstone marker.
pub const REVISION_LEN: usize = 16;
const TOMBSTONE_MARK: u8 = b't';

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The key of this change in the `kv` column family.
    pub fn encode(self, tombstone: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVISION_LEN + 1);
        out.extend_from_slice(&(self.main as u64).to_be_bytes());
        out.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            out.push(TOMBSTONE_MARK);
        }
        out
    }

    /// The first key of main revision `main` in the `kv` column family (for range scans).
    pub fn encode_main_start(main: i64) -> Vec<u8> {
        Revision::new(main, 0).encode(false)
    }

    /// Decodes a `kv` column family key into the revision and whether it is a tombstone.
    pub fn decode(bytes: &[u8]) -> Option<(Revision, bool)> {
        if bytes.len() != REVISION_LEN && bytes.len() != REVISION_LEN + 1 {
            return None;
        }
        let main = u64::from_be_bytes(bytes[0..8].try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(bytes[8..16].try_into().ok()?) as i64;
        let tombstone = match bytes.get(REVISION_LEN) {
            None => false,
            Some(&TOMBSTONE_MARK) => true,
            Some(_) => return None,
        };
        Some((Revision { main, sub }, tombstone))
    }
}

impl Revision {
    /// etcd's key for this change in its `key` bucket (and in HashKV): main revision, `_`, sub
    /// revision, big-endian, and `t` for a tombstone.
    pub fn encode_etcd(self, tombstone: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(REVISION_LEN + 2);
        out.extend_from_slice(&(self.main as u64).to_be_bytes());
        out.push(b'_');
        out.extend_from_slice(&(self.sub as u64).to_be_bytes());
        if tombstone {
            out.push(TOMBSTONE_MARK);
        }
        out
    }

    /// Decodes etcd's `key` bucket key into the revision and whether it is a tombstone.
    pub fn decode_etcd(bytes: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match bytes.len() {
            17 => false,
            18 if bytes.get(17) == Some(&TOMBSTONE_MARK) => true,
            _ => return None,
        };
        if bytes.get(8) != Some(&b'_') {
            return None;
        }
        let main = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) as i64;
        let sub = u64::from_be_bytes(bytes.get(9..17)?.try_into().ok()?) as i64;
        Some((Revision { main, sub }, tombstone))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_keys_round_trip_and_reject_other_shapes() {
        for (rev, tomb) in [(Revision::new(2, 0), false), (Revision::new(1 << 40, 7), true)] {
            assert_eq!(Revision::decode_etcd(&rev.encode_etcd(tomb)), Some((rev, tomb)));
        }
        let good = Revision::new(5, 1).encode_etcd(false);
        assert_eq!(good.len(), 17);
        assert_eq!(Revision::decode_etcd(&good[..16]), None);
        let mut bad_sep = good.clone();
        bad_sep[8] = b'x';
        assert_eq!(Revision::decode_etcd(&bad_sep), None);
        let mut bad_mark = good.clone();
        bad_mark.push(b'x');
        assert_eq!(Revision::decode_etcd(&bad_mark), None);
        // etcd's byte order is revision order, as rkv's is.
        assert!(Revision::new(2, 1).encode_etcd(true) < Revision::new(3, 0).encode_etcd(false));
        assert!(good < Revision::new(5, 2).encode_etcd(false));
    }

    #[test]
    fn encoding_sorts_like_revisions() {
        let revs = [
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(256, 0),
            Revision::new(256, 3),
        ];
        for pair in revs.windows(2) {
            assert!(pair[0].encode(false) < pair[1].encode(false));
            assert!(pair[0].encode(true) < pair[1].encode(false));
        }
    }

    #[test]
    fn decode_round_trips_and_rejects_garbage() {
        let rev = Revision::new(42, 7);
        assert_eq!(Revision::decode(&rev.encode(false)), Some((rev, false)));
        assert_eq!(Revision::decode(&rev.encode(true)), Some((rev, true)));
        assert_eq!(Revision::decode(b"short"), None);
        let mut bad = rev.encode(false);
        bad.push(b'x');
        assert_eq!(Revision::decode(&bad), None);
    }
}
