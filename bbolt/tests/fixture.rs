//! Reading a snapshot that real etcd 3.5.1 wrote (tests/data/README.txt says how it was made
//! and what bbolt's own CLI printed for it).

mod common;

use common::{fixture_model, hex, read_model, write_model, TestResult, FIXTURE};
use rkv_bbolt::Db;

const ETCD_BUCKETS: [&str; 10] = [
    "alarm",
    "auth",
    "authRoles",
    "authUsers",
    "cluster",
    "key",
    "lease",
    "members",
    "members_removed",
    "meta",
];

#[test]
fn opens_with_the_sha256_trailer_and_reports_the_meta() -> TestResult {
    let db = Db::open(FIXTURE)?;
    assert_eq!(db.page_size(), 4096);
    // `bbolt page FILE 0 1`: txid 400 on page 0, 399 on page 1, HWM 23, no synced freelist.
    assert_eq!(db.txid(), 400);
    assert_eq!(db.high_water_mark(), 23);
    assert_eq!(db.db_len(), 23 * 4096);
    assert_eq!(FIXTURE.len() as u64, db.db_len() + 32);
    assert_eq!(db.freelist_page(), None);
    assert_eq!(db.free_pages()?, None);
    Ok(())
}

#[test]
fn bucket_names_are_etcds() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let names: Vec<&[u8]> = db.bucket_names()?;
    let expected: Vec<&[u8]> = ETCD_BUCKETS.iter().map(|s| s.as_bytes()).collect();
    assert_eq!(names, expected);
    assert!(db.bucket(b"no-such-bucket")?.is_none());
    Ok(())
}

#[test]
fn key_bucket_matches_the_bbolt_cli() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let key = db.bucket(b"key")?.ok_or("no key bucket")?;
    // A branch root (`bbolt pages`: page 9 is the key bucket's branch page).
    assert_eq!(key.root_page(), Some(9));
    let mut keys = Vec::new();
    key.for_each(|k, _| {
        keys.push(k);
        Ok::<_, rkv_bbolt::Error>(())
    })?;
    // `bbolt keys -format hex FILE key`: 295 lines, first and last as below (revision
    // 4 and 394, sub-revision 0).
    assert_eq!(keys.len(), 295);
    assert_eq!(keys.first().copied(), Some(hex("00000000000000045f0000000000000000")?.as_slice()));
    assert_eq!(keys.last().copied(), Some(hex("000000000000018a5f0000000000000000")?.as_slice()));
    Ok(())
}

#[test]
fn every_key_and_value_matches_the_bbolt_cli_dump() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let expected = fixture_model()?;
    let got = read_model(&db)?;
    // The dump lists only non-empty buckets; the rest must be empty.
    for name in ETCD_BUCKETS {
        let got_entries = got.get(name.as_bytes()).cloned().unwrap_or_default();
        let want = expected.get(name.as_bytes()).cloned().unwrap_or_default();
        assert_eq!(got_entries, want, "bucket {name}");
    }
    assert_eq!(expected.values().map(|b| b.len()).sum::<usize>(), 304);
    // Point lookups agree with iteration.
    for (name, entries) in &expected {
        let bucket = db.bucket(name)?.ok_or("bucket missing")?;
        for (k, v) in entries {
            assert_eq!(bucket.get(k)?, Some(v.as_slice()));
        }
        assert_eq!(bucket.get(b"\x00")?, None);
        assert_eq!(bucket.get(b"\xff\xff\xff")?, None);
    }
    Ok(())
}

#[test]
fn meta_bucket_values() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let meta = db.bucket(b"meta")?.ok_or("no meta bucket")?;
    assert_eq!(meta.root_page(), None, "etcd's small buckets are inline");
    assert_eq!(meta.get(b"consistent_index")?, Some(&399u64.to_be_bytes()[..]));
    assert_eq!(meta.get(b"term")?, Some(&2u64.to_be_bytes()[..]));
    let cluster = db.bucket(b"cluster")?.ok_or("no cluster bucket")?;
    assert_eq!(cluster.get(b"clusterVersion")?, Some(&b"3.5.0"[..]));
    Ok(())
}

#[test]
fn check_passes_like_bbolt_check() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let sum = db.check()?;
    // `etcdutl snapshot status`: totalKey 304.
    assert_eq!(sum.keys, 304);
    assert_eq!(sum.buckets, 10);
    assert_eq!(sum.free_pages, None);
    assert_eq!(sum.max_depth, 2);
    Ok(())
}

#[test]
fn rewriting_the_fixture_preserves_every_entry() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let model = read_model(&db)?;
    let copy = write_model(&model, 4096)?;
    let db2 = Db::open(&copy)?;
    assert_eq!(db2.bucket_names()?, db.bucket_names()?);
    assert_eq!(read_model(&db2)?, model);
    assert_eq!(db2.check()?.keys, 304);
    // Empty etcd buckets come out inline, the rest with root pages.
    for name in db2.bucket_names()? {
        let b = db2.bucket(name)?.ok_or("missing")?;
        let empty = model.get(name).is_none_or(|m| m.is_empty());
        assert_eq!(b.root_page().is_none(), empty, "bucket {}", String::from_utf8_lossy(name));
    }
    Ok(())
}

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The values of the root bucket's leaf elements, read raw (the root is a single leaf).
fn raw_root_values(data: &[u8]) -> Result<Entries, String> {
    let ps = 4096;
    let root = common::u64_at(data, common::META_ROOT) as usize * ps;
    let page = data.get(root..root + ps).ok_or("root page out of range")?;
    if page[8] != 0x02 {
        return Err("root is not a leaf".into());
    }
    let count = usize::from(u16::from_le_bytes([page[10], page[11]]));
    let field =
        |off: usize| u32::from_le_bytes([page[off], page[off + 1], page[off + 2], page[off + 3]]) as usize;
    (0..count)
        .map(|i| {
            let e = 16 + 16 * i;
            let (pos, ksize, vsize) = (field(e + 4), field(e + 8), field(e + 12));
            let key = page.get(e + pos..e + pos + ksize).ok_or("key")?;
            let value = page.get(e + pos + ksize..e + pos + ksize + vsize).ok_or("value")?;
            Ok((key.to_vec(), value.to_vec()))
        })
        .collect()
}

#[test]
fn empty_buckets_are_byte_identical_to_etcds() -> TestResult {
    let db = Db::open(FIXTURE)?;
    let copy = write_model(&read_model(&db)?, 4096)?;
    let theirs = raw_root_values(FIXTURE)?;
    let ours = raw_root_values(&copy)?;
    let empty = ["alarm", "authRoles", "authUsers", "members_removed"];
    for name in empty {
        let find =
            |v: &[(Vec<u8>, Vec<u8>)]| v.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v.clone());
        let (t, o) = (find(&theirs), find(&ours));
        // Inline bucket header (root 0, sequence 0) and an empty leaf page header.
        assert_eq!(t.as_ref().map(Vec::len), Some(32), "{name}");
        assert_eq!(t, o, "{name}");
    }
    Ok(())
}
