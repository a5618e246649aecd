//! Damaged input is rejected with an error that says what is wrong, never a panic or a hang.

mod common;

use common::*;
use proptest::prelude::*;
use rkv_bbolt::{Db, Error};

const PS: usize = 4096;
/// The fixture's bbolt part (without the SHA-256 trailer).
const DB_LEN: usize = 23 * PS;
/// The key bucket's root in the fixture, a branch page of 9 elements (`bbolt pages`).
const KEY_ROOT: u64 = 9;

fn fixture() -> Vec<u8> {
    FIXTURE.to_vec()
}

fn corrupt_msg(r: Result<(), Error>) -> String {
    match r {
        Err(Error::Corrupt(m)) => m,
        other => format!("not a Corrupt error: {other:?}"),
    }
}

fn key_bucket_walk(data: &[u8]) -> Result<(), Error> {
    let db = Db::open(data)?;
    let key = db.bucket(b"key")?.ok_or_else(|| Error::Corrupt("no key bucket".into()))?;
    key.for_each(|_, _| Ok(()))
}

#[test]
fn empty_and_tiny_inputs() {
    assert!(matches!(Db::open(&[]), Err(Error::NotBbolt(ref m)) if m == "empty file"));
    for len in [1, 15, 16, 79, 80, 1023, 4096, 8192] {
        assert!(matches!(Db::open(&vec![0u8; len]), Err(Error::NotBbolt(_))), "{len} zero bytes");
    }
}

#[test]
fn wrong_magic_is_not_bbolt() {
    let mut data = fixture();
    put_u32(&mut data, 16, 0xDEADBEEF);
    put_u32(&mut data, PS + 16, 0xDEADBEEF);
    let err = Db::open(&data).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("not a bbolt file: meta page 0: bad magic 0xdeadbeef"), "{err}");
}

#[test]
fn a_bad_meta_falls_back_to_the_other() -> TestResult {
    let mut data = fixture();
    data[16 + 50] ^= 0x01; // meta 0's txid: checksum no longer matches
    let db = Db::open(&data)?;
    assert_eq!(db.txid(), 399);
    exercise(&data)?;

    // Page 0 unreadable entirely: page 1 is found by probing page sizes.
    data[..PS].fill(0);
    assert_eq!(Db::open(&data)?.txid(), 399);

    data[PS + 16 + 60] ^= 0x80; // meta 1's checksum too
    let err = Db::open(&data).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("meta page 1: at offset 4096: checksum mismatch"), "{err}");
    Ok(())
}

#[test]
fn truncated_at_every_512_byte_boundary() {
    for cut in (0..=FIXTURE.len()).step_by(512) {
        let r = exercise(&FIXTURE[..cut]);
        if cut < DB_LEN {
            assert!(r.is_err(), "cut at {cut} accepted");
        } else {
            assert!(r.is_ok(), "cut at {cut}: {r:?}");
        }
    }
    let short = Db::open(&FIXTURE[..DB_LEN - 512]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(short.contains("23 pages of 4096 bytes but the file has only 93696 bytes"), "{short}");
}

#[test]
fn every_byte_of_the_meta_pages_damaged() {
    let mut data = fixture();
    for off in 0..2 * PS {
        data[off] ^= 0xFF;
        let _ = exercise(&data);
        data[off] ^= 0xFF;
    }
    // Every single bit of the headers and meta structs, the only non-zero bytes there.
    for off in (0..80).chain(PS..PS + 80) {
        for bit in 0..8 {
            data[off] ^= 1 << bit;
            let _ = exercise(&data);
            data[off] ^= 1 << bit;
        }
    }
}

#[test]
fn every_structural_byte_of_the_data_pages_damaged() {
    // Page headers and element arrays of every page in use: the bytes that hold offsets,
    // lengths, counts and page ids. (Key and value bytes get random flips below.)
    let mut data = fixture();
    for page in 2..DB_LEN / PS {
        let start = page * PS;
        let count = usize::from(u16::from_le_bytes([data[start + 10], data[start + 11]]));
        let end = (start + 16 + 16 * count).min(start + PS);
        for off in start..end {
            for pattern in [0xFF, 0x01, 0x80] {
                data[off] ^= pattern;
                let _ = exercise(&data);
                data[off] ^= pattern;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bit_flips(flips in proptest::collection::vec((0..DB_LEN, 0u8..8), 1..16)) {
        let mut data = fixture();
        for (off, bit) in flips {
            data[off] ^= 1 << bit;
        }
        let _ = exercise(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(data in proptest::collection::vec(any::<u8>(), 0..9000)) {
        let _ = exercise(&data);
    }

    #[test]
    fn random_bytes_behind_valid_metas(body in proptest::collection::vec(any::<u8>(), 0..6 * 1024)) {
        // Valid meta pages pointing into garbage pages.
        let mut data = raw_meta(1024, 0, 2, 8, 2);
        data.extend(raw_meta(1024, 1, 3, 8, 1));
        data.extend(&body);
        data.resize(8 * 1024, 0);
        let _ = exercise(&data);
    }
}

#[test]
fn meta_root_beyond_the_end_or_on_a_meta_page() {
    let mut data = fixture();
    set_meta_u64(&mut data, PS, META_ROOT, 9999);
    let err = Db::open(&data).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("root bucket page 9999 outside pages 2..23"), "{err}");

    let mut data = fixture();
    set_meta_u64(&mut data, PS, META_PGID, 1 << 60);
    assert!(matches!(Db::open(&data), Err(Error::Corrupt(_))));

    let mut data = fixture();
    set_meta_u64(&mut data, PS, META_FREELIST, 7777);
    assert!(matches!(Db::open(&data), Err(Error::Corrupt(ref m)) if m.contains("freelist page 7777")));
}

#[test]
fn branch_element_pointing_past_the_end() {
    let mut data = fixture();
    put_u64(&mut data, branch_pgid_off(PS, KEY_ROOT, 3), 9999);
    let msg = corrupt_msg(key_bucket_walk(&data));
    assert!(
        msg.contains("page 9999 (from element 3 of branch page 9): beyond the high-water mark 23"),
        "{msg}"
    );
    assert!(exercise(&data).is_err());
}

#[test]
fn branch_element_pointing_at_its_own_page() -> TestResult {
    let mut data = fixture();
    put_u64(&mut data, branch_pgid_off(PS, KEY_ROOT, 0), KEY_ROOT);
    let msg = corrupt_msg(key_bucket_walk(&data));
    assert!(msg.contains("page 9 (from element 0 of branch page 9): page 9 is reached twice"), "{msg}");
    // A lookup below element 1's key follows the loop until the depth limit.
    let db = Db::open(&data)?;
    let key = db.bucket(b"key")?.ok_or("no key bucket")?;
    let msg = corrupt_msg(key.get(b"\x00").map(|_| ()));
    assert!(msg.contains("tree deeper than 64 levels at page 9"), "{msg}");
    assert!(exercise(&data).is_err());
    Ok(())
}

#[test]
fn branch_element_pointing_at_a_meta_or_freelist_page() -> TestResult {
    let mut data = fixture();
    put_u64(&mut data, branch_pgid_off(PS, KEY_ROOT, 0), 1);
    assert!(corrupt_msg(key_bucket_walk(&data))
        .contains("page 1 (from element 0 of branch page 9): is a meta page"));

    let m = common::write_model(&[(b"b".to_vec(), [(b"k".to_vec(), b"v".to_vec())].into())].into(), 1024)?;
    let db = Db::open(&m)?;
    let free = db.freelist_page().ok_or("no freelist")?;
    let mut data = m.clone();
    set_meta_u64(&mut data, 1024, META_ROOT, free);
    let msg = corrupt_msg(Db::open(&data).and_then(|db| db.bucket_names().map(|_| ())));
    assert!(msg.contains("freelist page where a branch or leaf page was expected"), "{msg}");
    Ok(())
}

#[test]
fn page_header_naming_another_page() {
    let mut data = fixture();
    put_u64(&mut data, KEY_ROOT as usize * PS, 4);
    let msg = corrupt_msg(key_bucket_walk(&data));
    assert!(msg.contains("page 9 (root of bucket \"key\"): header names page 4"), "{msg}");
}

#[test]
fn element_and_count_out_of_bounds() {
    // The first child of the key bucket's branch root, a leaf.
    let leaf = u64_at(FIXTURE, branch_pgid_off(PS, KEY_ROOT, 0)) as usize;
    let mut data = fixture();
    put_u32(&mut data, leaf * PS + 16 + 3 * 16 + 8, u32::MAX); // element 3 ksize
    let msg = corrupt_msg(key_bucket_walk(&data));
    assert!(msg.contains(&format!("page {leaf}: element 3 key out of bounds")), "{msg}");

    let mut data = fixture();
    put_u32(&mut data, leaf * PS + 16 + 5 * 16 + 12, 1 << 20); // element 5 vsize
    assert!(corrupt_msg(key_bucket_walk(&data)).contains("element 5 value out of bounds"));

    let mut data = fixture();
    put_u16(&mut data, leaf * PS + 10, 0xFFFF);
    assert!(corrupt_msg(key_bucket_walk(&data)).contains("65535 elements do not fit in 4096 bytes"));

    let mut data = fixture();
    put_u32(&mut data, leaf * PS + 12, 50); // overflow
    assert!(corrupt_msg(key_bucket_walk(&data)).contains("50 overflow pages run past the high-water mark"));
}

#[test]
fn keys_out_of_order() {
    let mut data = fixture();
    // Swap the pgids of two branch elements: the subtrees' keys then contradict their bounds.
    let (a, b) = (branch_pgid_off(PS, KEY_ROOT, 1), branch_pgid_off(PS, KEY_ROOT, 2));
    let (pa, pb) = (u64_at(&data, a), u64_at(&data, b));
    put_u64(&mut data, a, pb);
    put_u64(&mut data, b, pa);
    let msg = corrupt_msg(key_bucket_walk(&data));
    assert!(msg.contains("bucket \"key\"") && msg.contains("branch key"), "{msg}");
}

#[test]
fn too_deep_trees_are_refused() -> TestResult {
    let ok = chain_db(60);
    let db = Db::open(&ok)?;
    let b = db.bucket(b"b")?.ok_or("no bucket")?;
    assert_eq!(b.get(b"a")?, Some(&b"v"[..]));
    assert_eq!(db.check()?.max_depth, 61);

    let deep = chain_db(100);
    let db = Db::open(&deep)?;
    let b = db.bucket(b"b")?.ok_or("no bucket")?;
    let walk = corrupt_msg(b.for_each(|_, _| Ok(())));
    assert!(walk.contains("bucket \"b\": tree deeper than 64 levels"), "{walk}");
    let get = corrupt_msg(b.get(b"a").map(|_| ()));
    assert!(get.contains("deeper than 64 levels"), "{get}");
    Ok(())
}

#[test]
fn a_value_flagged_as_a_nested_bucket() -> TestResult {
    let m = common::write_model(&[(b"b".to_vec(), [(b"k".to_vec(), b"v".to_vec())].into())].into(), 1024)?;
    let db = Db::open(&m)?;
    let root = db.bucket(b"b")?.and_then(|b| b.root_page()).ok_or("no root")? as usize;
    let mut data = m.clone();
    put_u32(&mut data, root * 1024 + 16, 1); // element 0 flags: bucket
    let db = Db::open(&data)?;
    let b = db.bucket(b"b")?.ok_or("no bucket")?;
    assert!(corrupt_msg(b.for_each(|_, _| Ok(()))).contains("key \"k\" is a nested bucket"));
    assert!(corrupt_msg(b.get(b"k").map(|_| ())).contains("is a nested bucket"));
    // Its 1-byte value is no bucket header.
    let nested = b.bucket(b"k").map(|_| ());
    assert!(corrupt_msg(nested).contains("bucket \"k\" has a 1-byte header"));
    assert_eq!(b.bucket_names()?, vec![&b"k"[..]]);
    Ok(())
}

#[test]
fn freelist_damage() -> TestResult {
    let m = common::write_model(&[(b"b".to_vec(), [(b"k".to_vec(), b"v".to_vec())].into())].into(), 1024)?;
    let free = Db::open(&m)?.freelist_page().ok_or("no freelist")? as usize;

    let mut data = m.clone();
    put_u16(&mut data, free * 1024 + 10, 0xFFFF);
    put_u64(&mut data, free * 1024 + 16, u64::MAX / 2);
    let msg = corrupt_msg(Db::open(&data).and_then(|db| db.free_pages().map(|_| ())));
    assert!(msg.contains("ids do not fit"), "{msg}");

    // A page both free and in use.
    let mut data = m.clone();
    put_u16(&mut data, free * 1024 + 10, 1);
    put_u64(&mut data, free * 1024 + 16, 2);
    let db = Db::open(&data)?;
    assert_eq!(db.free_pages()?, Some(vec![2]));
    assert!(corrupt_msg(db.check().map(|_| ())).contains("page 2: both free and in use"));
    Ok(())
}
