//! `KeyIndex`: the revisions of one key, grouped into generations.
//!
//! A generation is the life of a key from its creation to its deletion. Every generation but
//! the last ends with the revision of its tombstone; the last one is either live or empty
//! (the key is deleted and not yet recreated). Example, for key "foo":
//!
//! ```text
//! put(1.0) put(2.0) tombstone(3.0) put(4.0) tombstone(5.0)
//! generations: {1.0, 2.0, 3.0(t)} {4.0, 5.0(t)} {empty}
//! ```
//!
//! Compaction at revision R keeps, per key, the newest revision at or below R, and every
//! revision above R. A tombstone below R goes; a tombstone at exactly R stays, so that a watch
//! from R still gets that delete (etcd 3.6's fix of etcd issue 18089; etcd 3.5.1 dropped it):
//!
//! ```text
//! compact(2): {2.0, 3.0(t)} {4.0, 5.0(t)} {empty}
//! compact(3): {3.0(t)} {4.0, 5.0(t)} {empty}
//! compact(4): {4.0, 5.0(t)} {empty}
//! compact(5): {5.0(t)} {empty}
//! compact(6): {empty}              -> the key disappears from the index
//! ```
//!
//! This is etcd's `key_index.go` model; keeping it means reads at any revision at or above the
//! compacted one, and watches from it, answer exactly as etcd does. `keep` (what HashKV
//! hashes) still leaves out a tombstone at R, as etcd's does, so hashes stay equal to etcd's.

use std::collections::HashSet;

use crate::revision::Revision;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Generation {
    /// Version of the key at the newest revision of this generation.
    ver: i64,
    /// Revision that created this generation (kept after compaction removes it from `revs`).
    created: Revision,
    revs: Vec<Revision>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Index of the newest revision with `main <= at`, if any.
    fn newest_at_or_below(&self, at: i64) -> Option<usize> {
        self.revs.iter().rposition(|rev| rev.main <= at)
    }
}

/// What a read at some revision sees of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyAt {
    /// The revision whose stored value is the key's value at the read revision.
    pub modified: Revision,
    pub created: Revision,
    pub version: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIndex {
    modified: Revision,
    generations: Vec<Generation>,
}

impl KeyIndex {
    pub fn new() -> Self {
        Self { modified: Revision::default(), generations: vec![Generation::default()] }
    }

    /// Rebuilds the index of a key from a stored value at restart: the stored value carries the
    /// creation revision and version that compaction may have removed from the history.
    pub fn restored(created: Revision, modified: Revision, version: i64) -> Self {
        Self { modified, generations: vec![Generation { ver: version, created, revs: vec![modified] }] }
    }

    /// Rebuilds the index of a key whose oldest stored revision is a tombstone (a compaction at
    /// exactly that revision kept it): without it, a later compaction there would drop the
    /// delete a watch from that revision must see (etcd's `restoreTombstone`). The creation
    /// revision is gone with the compacted history.
    pub fn restored_tombstone(tombstone: Revision) -> Self {
        let closed = Generation { ver: 1, created: Revision::default(), revs: vec![tombstone] };
        Self { modified: tombstone, generations: vec![closed, Generation::default()] }
    }

    pub fn put(&mut self, rev: Revision) {
        debug_assert!(rev > self.modified, "revisions of a key must grow: {rev} after {}", self.modified);
        if self.generations.is_empty() {
            self.generations.push(Generation::default());
        }
        let last = self.generations.len() - 1;
        let g = &mut self.generations[last];
        if g.is_empty() {
            g.created = rev;
        }
        g.revs.push(rev);
        g.ver += 1;
        self.modified = rev;
    }

    /// Ends the live generation with a tombstone. Returns false (and changes nothing) when the
    /// key is not live.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if self.is_deleted() {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation::default());
        true
    }

    /// True when the key has no live generation.
    pub fn is_deleted(&self) -> bool {
        self.generations.last().is_none_or(Generation::is_empty)
    }

    /// True when nothing is left of the key's history.
    pub fn is_empty(&self) -> bool {
        self.generations.len() == 1 && self.generations[0].is_empty()
    }

    /// What a read at revision `at` sees of this key, or None when it did not exist then.
    pub fn get(&self, at: i64) -> Option<KeyAt> {
        let g = self.find_generation(at)?;
        let n = g.newest_at_or_below(at)?;
        Some(KeyAt {
            modified: g.revs[n],
            created: g.created,
            version: g.ver - (g.revs.len() - n - 1) as i64,
        })
    }

    /// The generation that holds the key's state at revision `at`, if the key existed then.
    fn find_generation(&self, at: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(newest)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            // A closed generation whose tombstone is at or below `at`: deleted at `at`.
            if i != last && newest.main <= at {
                return None;
            }
            if first.main <= at {
                return Some(g);
            }
        }
        None
    }

    /// Revisions of this key with main revision strictly greater than `after`.
    #[cfg(test)]
    pub fn revisions_since(&self, after: i64) -> impl Iterator<Item = Revision> + '_ {
        self.generations.iter().flat_map(|g| g.revs.iter().copied()).filter(move |rev| rev.main > after)
    }

    /// The first generation whose tombstone is above `at` (or at it, with `at_too`), the last
    /// one if none is. Requires at least one generation.
    fn first_generation_ending_after(&self, at: i64, at_too: bool) -> usize {
        let last = self.generations.len() - 1;
        self.generations[..last]
            .iter()
            .position(|g| {
                let tombstone = g.revs.last().map_or(i64::MIN, |r| r.main);
                tombstone > at || (at_too && tombstone == at)
            })
            .unwrap_or(last)
    }

    /// Records in `keep` the revision a compaction at `at` would keep for this key, without
    /// compacting (etcd's `keyIndex.keep`, used by HashKV).
    pub fn keep(&self, at: i64, keep: &mut HashSet<Revision>) {
        if self.is_empty() {
            return;
        }
        // What compactions kept before tombstones at `at` stayed: a tombstone at `at` stays on
        // disk but is not hashed, so that HashKV gives the values etcd always gave.
        let last = self.generations.len() - 1;
        let gen_idx = self.first_generation_ending_after(at, false);
        let g = &self.generations[gen_idx];
        if let Some(n) = g.newest_at_or_below(at) {
            if !(n == g.revs.len() - 1 && gen_idx != last) {
                keep.insert(g.revs[n]);
            }
        }
    }

    /// Drops the history at or below `at` that no read at `at` or later can see, and records in
    /// `keep` the revision that still holds the key's value at `at`.
    pub fn compact(&mut self, at: i64, keep: &mut HashSet<Revision>) {
        if self.generations.is_empty() {
            return;
        }
        let last = self.generations.len() - 1;
        let gen_idx = self.first_generation_ending_after(at, true);
        // A generation closed at exactly `at` may be followed by one recreated within revision
        // `at` (a txn that deletes and puts the key): its value at `at` is kept too, or the
        // live key would point at a deleted revision (etcd issue 22376).
        for i in gen_idx..=last {
            let g = &mut self.generations[i];
            let Some(n) = g.newest_at_or_below(at) else { break };
            keep.insert(g.revs[n]);
            g.revs.drain(..n);
            if i == last || g.revs.last().is_some_and(|r| r.main > at) {
                break;
            }
        }
        self.generations.drain(..gen_idx);
    }
}

impl Default for KeyIndex {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    /// foo: put 2, put 4, tombstone 6, put 8, put 10, tombstone 12, put 14
    fn history() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(rev(2));
        ki.put(rev(4));
        assert!(ki.tombstone(rev(6)));
        ki.put(rev(8));
        ki.put(rev(10));
        assert!(ki.tombstone(rev(12)));
        ki.put(rev(14));
        ki
    }

    #[test]
    fn get_sees_the_generation_live_at_the_revision() {
        let ki = history();
        let cases = [
            (1, None),
            (2, Some((2, 2, 1))),
            (5, Some((4, 2, 2))),
            (6, None),
            (7, None),
            (8, Some((8, 8, 1))),
            (11, Some((10, 8, 2))),
            (12, None),
            (14, Some((14, 14, 1))),
            (100, Some((14, 14, 1))),
        ];
        for (at, want) in cases {
            let got = ki.get(at).map(|k| (k.modified.main, k.created.main, k.version));
            assert_eq!(got, want, "get at {at}");
        }
    }

    #[test]
    fn tombstone_of_a_deleted_key_is_refused() {
        let mut ki = KeyIndex::new();
        ki.put(rev(2));
        assert!(ki.tombstone(rev(3)));
        assert!(!ki.tombstone(rev(4)));
        assert!(ki.is_deleted());
    }

    #[test]
    fn compaction_keeps_what_reads_at_or_after_it_need() {
        // A tombstone at exactly the compacted revision stays (6 and 12), one below it goes.
        let cases: [(i64, &[i64], Option<i64>); 8] = [
            (1, &[2, 4, 6, 8, 10, 12, 14], None),
            (3, &[2, 4, 6, 8, 10, 12, 14], Some(2)),
            (6, &[6, 8, 10, 12, 14], Some(6)),
            (7, &[8, 10, 12, 14], None),
            (9, &[8, 10, 12, 14], Some(8)),
            (12, &[12, 14], Some(12)),
            (13, &[14], None),
            (20, &[14], Some(14)),
        ];
        for (at, remaining, kept) in cases {
            let mut ki = history();
            let before: Vec<_> = (at..=20).map(|r| ki.get(r)).collect();
            let mut keep = HashSet::new();
            ki.compact(at, &mut keep);
            let left: Vec<i64> = ki.revisions_since(0).map(|r| r.main).collect();
            assert_eq!(left, remaining, "revisions left after compact({at})");
            assert_eq!(keep, kept.map(rev).into_iter().collect(), "kept by compact({at})");
            let after: Vec<_> = (at..=20).map(|r| ki.get(r)).collect();
            assert_eq!(before, after, "reads at or after compact({at}) must not change");
        }
    }

    #[test]
    fn compaction_past_the_last_tombstone_empties_the_key() {
        let mut ki = KeyIndex::new();
        ki.put(rev(2));
        assert!(ki.tombstone(rev(3)));
        let mut keep = HashSet::new();
        ki.compact(3, &mut keep);
        assert!(!ki.is_empty(), "a tombstone at the compacted revision stays");
        assert_eq!(keep, [rev(3)].into_iter().collect());
        let mut keep = HashSet::new();
        ki.compact(4, &mut keep);
        assert!(ki.is_empty());
        assert!(keep.is_empty());
    }

    /// A key deleted and put again within one revision (one txn), compacted at that revision:
    /// the tombstone and the live value both stay, and reads and HashKV see the live value.
    #[test]
    fn a_key_recreated_within_the_compacted_revision_keeps_its_value() {
        let sub = |main, sub| Revision::new(main, sub);
        let mut ki = KeyIndex::new();
        ki.put(sub(17, 0));
        assert!(ki.tombstone(sub(18, 0)));
        ki.put(sub(18, 1));
        let before = ki.get(18);
        let mut hashed = HashSet::new();
        ki.keep(18, &mut hashed);
        assert_eq!(hashed, [sub(18, 1)].into_iter().collect());
        let mut keep = HashSet::new();
        ki.compact(18, &mut keep);
        assert_eq!(keep, [sub(18, 0), sub(18, 1)].into_iter().collect());
        assert_eq!(ki.get(18), before);
        assert_eq!(before.map(|k| k.modified), Some(sub(18, 1)));
    }

    /// HashKV hashes what `keep` returns: etcd leaves a tombstone at the revision out of it.
    #[test]
    fn keep_leaves_out_a_tombstone_at_the_revision() {
        let ki = history();
        for (at, kept) in [(5, Some(4)), (6, None), (7, None), (12, None), (14, Some(14))] {
            let mut keep = HashSet::new();
            ki.keep(at, &mut keep);
            assert_eq!(keep, kept.map(rev).into_iter().collect(), "keep({at})");
        }
    }

    /// A restart that finds a key's history starting with a tombstone (kept by a compaction at
    /// its revision) rebuilds it so that reads and the next compactions treat it as before.
    #[test]
    fn a_restored_tombstone_behaves_as_the_compacted_key() {
        let mut compacted = KeyIndex::new();
        compacted.put(rev(2));
        assert!(compacted.tombstone(rev(3)));
        compacted.put(rev(4));
        compacted.compact(3, &mut HashSet::new());
        let mut restored = KeyIndex::restored_tombstone(rev(3));
        restored.put(rev(4));
        for at in 3..6 {
            assert_eq!(
                restored.get(at).map(|k| (k.modified, k.version)),
                compacted.get(at).map(|k| (k.modified, k.version)),
                "get({at})"
            );
        }
        let (mut a, mut b) = (HashSet::new(), HashSet::new());
        restored.compact(3, &mut a);
        compacted.compact(3, &mut b);
        assert_eq!(a, b);
        assert_eq!(a, [rev(3)].into_iter().collect());
    }
}
