//! Writer -> reader: the reader returns exactly what was written, and the files have the
//! layout bbolt expects (checked with `Db::check`, the equivalent of `bbolt check`).

mod common;

use std::collections::BTreeMap;
use std::io::{Cursor, Seek, SeekFrom};

use common::{read_model, write_model, Model, TestResult};
use proptest::prelude::*;
use rkv_bbolt::{Db, Error, Writer, MAX_KEY_SIZE};

fn model(buckets: &[(&str, usize, usize)]) -> Model {
    let mut m = Model::new();
    for &(name, n, vlen) in buckets {
        let entries = m.entry(name.as_bytes().to_vec()).or_default();
        for i in 0..n {
            entries.insert(format!("k{i:08}").into_bytes(), vec![(i % 251) as u8; vlen + i % 7]);
        }
    }
    m
}

/// Writes `m`, checks that it reads back exactly and passes the check, returns the file.
fn assert_round_trip(m: &Model, page_size: usize) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let data = write_model(m, page_size)?;
    assert!(data.len().is_multiple_of(page_size));
    let db = Db::open(&data)?;
    assert_eq!(db.page_size(), page_size);
    assert_eq!(db.db_len(), data.len() as u64);
    assert_eq!(&read_model(&db)?, m);
    for (name, entries) in m {
        let b = db.bucket(name)?.ok_or("bucket missing")?;
        for (k, v) in entries {
            assert_eq!(b.get(k)?, Some(v.as_slice()));
        }
    }
    let sum = db.check()?;
    assert_eq!(sum.keys, m.values().map(|e| e.len() as u64).sum::<u64>());
    assert_eq!(sum.buckets, m.len() as u64);
    // No free pages: every page below the high-water mark is in use.
    assert_eq!(sum.free_pages, Some(0));
    assert_eq!(sum.pages_in_use, db.high_water_mark());
    assert_eq!(db.free_pages()?, Some(vec![]));
    Ok(data)
}

#[test]
fn small_file_layout() -> TestResult {
    let m = model(&[("a", 3, 5), ("b", 0, 0), ("key", 10, 20)]);
    let data = assert_round_trip(&m, 4096)?;
    let db = Db::open(&data)?;
    // Meta 0 and 1, a leaf for "a", a leaf for "key", the root bucket leaf, the freelist.
    assert_eq!(db.high_water_mark(), 6);
    assert_eq!(db.txid(), 2);
    assert_eq!(db.freelist_page(), Some(5));
    assert_eq!(db.bucket(b"a")?.and_then(|b| b.root_page()), Some(2));
    assert_eq!(db.bucket(b"b")?.and_then(|b| b.root_page()), None);
    assert_eq!(db.bucket(b"key")?.and_then(|b| b.root_page()), Some(3));
    Ok(())
}

#[test]
fn no_buckets_and_only_empty_buckets() -> TestResult {
    // Like a new bbolt file: meta, meta, empty root leaf, freelist.
    let data = assert_round_trip(&Model::new(), 4096)?;
    let db = Db::open(&data)?;
    assert_eq!(db.high_water_mark(), 4);
    assert!(db.bucket_names()?.is_empty());
    let data =
        assert_round_trip(&model(&[("alarm", 0, 0), ("auth", 0, 0), ("members_removed", 0, 0)]), 4096)?;
    let db = Db::open(&data)?;
    assert_eq!(db.high_water_mark(), 4);
    for name in db.bucket_names()? {
        let b = db.bucket(name)?.ok_or("missing")?;
        assert_eq!(b.root_page(), None);
        b.for_each(|_, _| Err(Error::Corrupt("an empty bucket has no entries".into())))?;
    }
    Ok(())
}

#[test]
fn many_pages_and_an_overflowing_value() -> TestResult {
    let mut m = model(&[("alarm", 0, 0), ("key", 12_000, 60), ("lease", 50, 10)]);
    let big = vec![0xABu8; 100 * 1024];
    m.entry(b"key".to_vec()).or_default().insert(b"k00006000-big".to_vec(), big.clone());
    let data = assert_round_trip(&m, 4096)?;
    let db = Db::open(&data)?;
    assert_eq!(db.bucket(b"key")?.ok_or("missing")?.get(b"k00006000-big")?, Some(big.as_slice()));
    // 12,000 keys fill about 240 leaves: two branch pages under a branch root.
    assert_eq!(db.check()?.max_depth, 3);
    Ok(())
}

#[test]
fn two_hundred_thousand_keys_nest_two_branch_levels() -> TestResult {
    let m = model(&[("key", 200_000, 10), ("z", 0, 0)]);
    let data = assert_round_trip(&m, 4096)?;
    let db = Db::open(&data)?;
    // Root bucket leaf, then branch -> branch -> leaf for "key".
    assert_eq!(db.check()?.max_depth, 3);
    Ok(())
}

#[test]
fn the_root_bucket_itself_can_need_branch_pages() -> TestResult {
    let mut m = Model::new();
    for i in 0..2000 {
        let entries = m.entry(format!("bucket{i:05}").into_bytes()).or_default();
        for j in 0..i % 3 {
            entries.insert(vec![b'k', j as u8 + 1], vec![j as u8; 4]);
        }
    }
    let data = assert_round_trip(&m, 4096)?;
    let db = Db::open(&data)?;
    assert_eq!(db.bucket_names()?.len(), 2000);
    assert!(db.check()?.max_depth >= 2);
    Ok(())
}

#[test]
fn maximal_keys_make_overflowing_branch_pages() -> TestResult {
    let mut m = Model::new();
    let entries = m.entry(b"big".to_vec()).or_default();
    for i in 0..40u8 {
        let mut k = vec![b'k'; MAX_KEY_SIZE];
        k[0] = i;
        entries.insert(k, vec![i; 10]);
    }
    m.entry(b"small".to_vec()).or_default().insert(b"a".to_vec(), b"b".to_vec());
    assert_round_trip(&m, 4096)?;
    Ok(())
}

#[test]
fn page_sizes_from_1k_to_64k() -> TestResult {
    let m = model(&[("a", 3000, 100), ("b", 0, 0), ("c", 7, 5000)]);
    for ps in [1024, 2048, 4096, 16384, 65536] {
        assert_round_trip(&m, ps)?;
    }
    Ok(())
}

#[test]
fn writes_to_a_real_file() -> TestResult {
    let mut file = tempfile::tempfile()?;
    let mut w = Writer::new(&mut file, 4096)?;
    w.bucket(b"key")?;
    for i in 0..5000u32 {
        w.put(&i.to_be_bytes(), b"v")?;
    }
    let (_, len) = w.finish()?;
    assert_eq!(file.metadata()?.len(), len);
    // The output is left at its end, where an etcd snapshot's SHA-256 trailer goes.
    assert_eq!(file.stream_position()?, len);
    file.seek(SeekFrom::Start(0))?;
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut data)?;
    let db = Db::open(&data)?;
    assert_eq!(db.check()?.keys, 5000);
    Ok(())
}

#[test]
fn writer_rejects_what_bbolt_would() -> TestResult {
    let new = || Writer::new(Cursor::new(Vec::new()), 4096);
    assert!(matches!(Writer::new(Cursor::new(Vec::new()), 1000), Err(Error::InvalidArgument(_))));
    assert!(matches!(Writer::new(Cursor::new(Vec::new()), 512), Err(Error::InvalidArgument(_))));
    assert!(matches!(new()?.put(b"k", b"v"), Err(Error::InvalidArgument(_))));
    assert!(matches!(new()?.bucket(b""), Err(Error::InvalidArgument(_))));
    assert!(matches!(new()?.bucket(&vec![1; MAX_KEY_SIZE + 1]), Err(Error::TooLarge(_))));

    let mut w = new()?;
    w.bucket(b"b")?;
    assert!(matches!(w.put(b"", b"v"), Err(Error::InvalidArgument(_))));
    assert!(matches!(w.put(&vec![1; MAX_KEY_SIZE + 1], b"v"), Err(Error::TooLarge(_))));
    w.put(b"k2", b"v")?;
    let err = w.put(b"k1", b"v");
    assert!(
        matches!(err, Err(Error::Unsorted(ref m)) if m.contains("\"k1\"") && m.contains("\"k2\"")),
        "{err:?}"
    );
    assert!(matches!(w.put(b"k2", b"again"), Err(Error::Unsorted(_))));
    assert!(matches!(w.bucket(b"a"), Err(Error::Unsorted(_))));
    assert!(matches!(w.bucket(b"b"), Err(Error::Unsorted(_))));
    // Rejected calls leave the writer usable.
    w.put(b"k3", b"v")?;
    w.bucket(b"c")?;
    let (out, _) = w.finish()?;
    let data = out.into_inner();
    let db = Db::open(&data)?;
    let expect: BTreeMap<Vec<u8>, Vec<u8>> =
        [(b"k2".to_vec(), b"v".to_vec()), (b"k3".to_vec(), b"v".to_vec())].into();
    let got = read_model(&db)?;
    assert_eq!(got.get(&b"b"[..]), Some(&expect));
    assert_eq!(got.get(&b"c"[..]).map(|e| e.len()), Some(0));
    Ok(())
}

#[test]
fn error_messages_read_well() {
    let e = Error::Corrupt("page 7: element 3 key out of bounds".into());
    assert_eq!(e.to_string(), "corrupt bbolt file: page 7: element 3 key out of bounds");
    let e = Error::NotBbolt("empty file".into());
    assert_eq!(e.to_string(), "not a bbolt file: empty file");
}

fn entries() -> impl Strategy<Value = BTreeMap<Vec<u8>, Vec<u8>>> {
    let value = prop_oneof![
        20 => proptest::collection::vec(any::<u8>(), 0..64),
        3 => proptest::collection::vec(any::<u8>(), 64..3000),
        1 => proptest::collection::vec(any::<u8>(), 3000..20_000),
    ];
    let key = prop_oneof![
        10 => proptest::collection::vec(any::<u8>(), 1..24),
        1 => proptest::collection::vec(any::<u8>(), 24..2000),
    ];
    proptest::collection::btree_map(key, value, 0..200)
}

fn models() -> impl Strategy<Value = Model> {
    let name = proptest::collection::vec(any::<u8>(), 1..12);
    let bucket = prop_oneof![1 => Just(BTreeMap::new()), 4 => entries()];
    proptest::collection::btree_map(name, bucket, 0..6)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_models_round_trip(m in models(), ps in prop_oneof![Just(1024usize), Just(4096usize)]) {
        let result = assert_round_trip(&m, ps).map(|_| ()).map_err(|e| e.to_string());
        prop_assert!(result.is_ok(), "{:?}", result);
        let data = write_model(&m, ps).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let db = Db::open(&data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Missing keys are absent, whatever their position relative to the present ones.
        for (name, entries) in &m {
            let b = db.bucket(name).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b = b.ok_or_else(|| TestCaseError::fail("bucket missing"))?;
            for k in entries.keys().take(20) {
                let mut missing = k.clone();
                missing.push(0);
                if !entries.contains_key(&missing) {
                    prop_assert_eq!(b.get(&missing).map_err(|e| TestCaseError::fail(e.to_string()))?, None);
                }
            }
        }
    }
}
