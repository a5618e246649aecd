//! Whether a role's key permissions cover a requested key or range (etcd's range permission
//! check: the union of the granted intervals must contain the whole request).

/// What a request does with keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// `[start, end)`, `end == None` unbounded.
type Interval = (Vec<u8>, Option<Vec<u8>>);

/// etcd's key conventions: an empty `range_end` is the single key (the interval up to the key
/// followed by a zero byte), `"\0"` is every key from `key` on.
fn interval(key: &[u8], range_end: &[u8]) -> Interval {
    match range_end {
        [] => {
            let mut end = key.to_vec();
            end.push(0);
            (key.to_vec(), Some(end))
        }
        [0] => (key.to_vec(), None),
        end => (key.to_vec(), Some(end.to_vec())),
    }
}

/// Whether the union of `granted` (key, range_end) permissions contains the request.
pub fn covers<'a>(granted: impl Iterator<Item = (&'a [u8], &'a [u8])>, key: &[u8], range_end: &[u8]) -> bool {
    let mut intervals: Vec<Interval> = granted.map(|(k, e)| interval(k, e)).collect();
    intervals.sort();
    // Merge overlapping or touching intervals.
    let mut merged: Vec<Interval> = Vec::new();
    for (start, end) in intervals {
        match merged.last_mut() {
            Some((_, last_end)) if last_end.as_ref().is_none_or(|e| start <= *e) => {
                *last_end = match (last_end.take(), end) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => merged.push((start, end)),
        }
    }
    let (want_start, want_end) = interval(key, range_end);
    merged.iter().any(|(start, end)| {
        *start <= want_start
            && match (end, &want_end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(e), Some(w)) => w <= e,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted<'a>(perms: &'a [(&'a [u8], &'a [u8])]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        perms.iter().copied()
    }

    #[test]
    fn single_keys_ranges_and_prefixes() {
        let perms: &[(&[u8], &[u8])] = &[(b"a", b""), (b"foo/", b"foo0"), (b"z", b"\0")];
        assert!(covers(granted(perms), b"a", b""));
        assert!(!covers(granted(perms), b"ab", b""));
        assert!(!covers(granted(perms), b"a", b"b"));
        assert!(covers(granted(perms), b"foo/x", b""));
        assert!(covers(granted(perms), b"foo/", b"foo0"));
        assert!(covers(granted(perms), b"foo/a", b"foo/b"));
        assert!(!covers(granted(perms), b"foo/", b"foo1"));
        assert!(!covers(granted(perms), b"foo", b""));
        assert!(covers(granted(perms), b"zz", b"\0"));
        assert!(!covers(granted(perms), b"y", b"\0"));
    }

    #[test]
    fn adjacent_grants_merge() {
        let perms: &[(&[u8], &[u8])] = &[(b"a", b"c"), (b"c", b"e")];
        assert!(covers(granted(perms), b"a", b"e"));
        assert!(!covers(granted(perms), b"a", b"f"));
        let gap: &[(&[u8], &[u8])] = &[(b"a", b"c"), (b"d", b"e")];
        assert!(!covers(granted(gap), b"a", b"e"));
    }
}
