//! `TreeIndex`: every key's `KeyIndex`, ordered by key (etcd's `index.go`).
//!
//! The index lives in memory and is rebuilt from the `kv` column family at start; it answers
//! "which revision holds key K's value at revision R" so that a read is one ordered walk here
//! plus point lookups by revision in RocksDB.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;

use crate::key_index::{KeyAt, KeyIndex};
use crate::revision::Revision;

/// The keys a request covers, decoded from etcd's (key, range_end) convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyRange<'a> {
    /// `range_end` empty: exactly `key`.
    Single(&'a [u8]),
    /// `[start, end)`; `end == None` is unbounded (`range_end == "\0"`).
    Range { start: &'a [u8], end: Option<&'a [u8]> },
}

impl<'a> KeyRange<'a> {
    /// etcd's rule: empty `range_end` is one key, `"\0"` is every key >= `key`.
    pub fn from_request(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => KeyRange::Single(key),
            [0] => KeyRange::Range { start: key, end: None },
            end => KeyRange::Range { start: key, end: Some(end) },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match *self {
            KeyRange::Single(k) => k == key,
            KeyRange::Range { start, end } => start <= key && end.is_none_or(|e| key < e),
        }
    }
}

#[derive(Debug, Default)]
pub struct TreeIndex {
    keys: BTreeMap<Vec<u8>, KeyIndex>,
}

impl TreeIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<KeyAt> {
        self.keys.get(key)?.get(at)
    }

    /// Visits, in key order, every key of `range` that exists at revision `at`. The visitor
    /// returns false to stop.
    pub fn visit<F>(&self, range: KeyRange<'_>, at: i64, mut f: F)
    where
        F: FnMut(&[u8], KeyAt) -> bool,
    {
        match range {
            KeyRange::Single(key) => {
                if let Some(k) = self.get(key, at) {
                    f(key, k);
                }
            }
            KeyRange::Range { start, end } => {
                if end.is_some_and(|e| e <= start) {
                    return;
                }
                let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
                for (key, ki) in self.keys.range::<[u8], _>((Bound::Included(start), upper)) {
                    if let Some(k) = ki.get(at) {
                        if !f(key, k) {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// The revisions holding the values of the keys of `range` at `at`, at most `limit` of them
    /// (0 = no limit), and how many keys there are in total.
    pub fn revisions(&self, range: KeyRange<'_>, at: i64, limit: usize) -> (Vec<Revision>, usize) {
        let mut revs = Vec::new();
        let mut total = 0;
        self.visit(range, at, |_, k| {
            if limit == 0 || revs.len() < limit {
                revs.push(k.modified);
            }
            total += 1;
            true
        });
        (revs, total)
    }

    pub fn count(&self, range: KeyRange<'_>, at: i64) -> usize {
        let mut total = 0;
        self.visit(range, at, |_, _| {
            total += 1;
            true
        });
        total
    }

    pub fn put(&mut self, key: &[u8], rev: Revision) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                let mut ki = KeyIndex::new();
                ki.put(rev);
                self.keys.insert(key.to_vec(), ki);
            }
        }
    }

    /// Returns false when the key is not live (nothing to delete).
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Restart path: the first stored revision of a key seen while rebuilding.
    pub fn restore(&mut self, key: &[u8], created: Revision, modified: Revision, version: i64) {
        self.keys.insert(key.to_vec(), KeyIndex::restored(created, modified, version));
    }

    /// Restart path: a key whose first stored revision is a tombstone.
    pub fn restore_tombstone(&mut self, key: &[u8], tombstone: Revision) {
        self.keys.insert(key.to_vec(), KeyIndex::restored_tombstone(tombstone));
    }

    pub fn key_index_mut(&mut self, key: &[u8]) -> Option<&mut KeyIndex> {
        self.keys.get_mut(key)
    }

    /// The revisions a compaction at `at` would keep, without compacting.
    pub fn keep(&self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        for ki in self.keys.values() {
            ki.keep(at, &mut keep);
        }
        keep
    }

    /// Compacts every key at `at`; returns the revisions at or below `at` that must stay on disk.
    pub fn compact(&mut self, at: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at, &mut keep);
            !ki.is_empty()
        });
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_range_follows_etcd_conventions() {
        assert_eq!(KeyRange::from_request(b"a", b""), KeyRange::Single(b"a"));
        assert_eq!(KeyRange::from_request(b"a", b"\0"), KeyRange::Range { start: b"a", end: None });
        let r = KeyRange::from_request(b"a", b"c");
        assert!(r.contains(b"a") && r.contains(b"b\xff") && !r.contains(b"c"));
        assert!(!KeyRange::from_request(b"c", b"a").contains(b"b"));
    }

    #[test]
    fn revisions_counts_past_the_limit() {
        let mut idx = TreeIndex::new();
        for (i, k) in [b"a", b"b", b"c", b"d"].iter().enumerate() {
            idx.put(*k, Revision::new(i as i64 + 2, 0));
        }
        assert!(idx.tombstone(b"c", Revision::new(6, 0)));
        let all = KeyRange::from_request(b"a", b"\0");
        let (revs, total) = idx.revisions(all, 6, 2);
        assert_eq!(revs, vec![Revision::new(2, 0), Revision::new(3, 0)]);
        assert_eq!(total, 3);
        assert_eq!(idx.count(all, 5), 4);
        let inverted = KeyRange::from_request(b"d", b"a");
        assert_eq!(idx.count(inverted, 6), 0);
    }
}
