//! Helpers shared by the integration tests: the etcd fixture, a reader pass that touches
//! every public read path, and raw page surgery for crafting damaged files.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Cursor;

use rkv_bbolt::{Db, Error, Writer};

pub type TestResult = Result<(), Box<dyn std::error::Error>>;

/// bucket name -> key -> value
pub type Model = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>>;

pub const FIXTURE: &[u8] = include_bytes!("../data/etcd-3.5.1.db");
pub const FIXTURE_DUMP: &str = include_str!("../data/etcd-3.5.1.bbolt-dump.txt");

pub fn hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("odd hex length: {s}"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad hex: {s}"))
        })
        .collect()
}

/// The fixture's contents as `bbolt keys`/`bbolt get` printed them (see tests/data/README.txt).
pub fn fixture_model() -> Result<Model, String> {
    let mut model = Model::new();
    for line in FIXTURE_DUMP.lines() {
        let mut parts = line.split(' ');
        let bucket = parts.next().ok_or("no bucket")?;
        let key = hex(parts.next().ok_or("no key")?)?;
        let value = hex(parts.next().unwrap_or(""))?;
        model.entry(bucket.as_bytes().to_vec()).or_default().insert(key, value);
    }
    Ok(model)
}

/// Writes `model` with the writer.
pub fn write_model(model: &Model, page_size: usize) -> Result<Vec<u8>, Error> {
    let mut w = Writer::new(Cursor::new(Vec::new()), page_size)?;
    for (name, entries) in model {
        w.bucket(name)?;
        for (k, v) in entries {
            w.put(k, v)?;
        }
    }
    let (out, len) = w.finish()?;
    let data = out.into_inner();
    assert_eq!(len, data.len() as u64);
    Ok(data)
}

/// Reads everything through the public API into a model.
pub fn read_model(db: &Db<'_>) -> Result<Model, Error> {
    let mut model = Model::new();
    for name in db.bucket_names()? {
        let bucket = db.bucket(name)?.ok_or_else(|| Error::Corrupt("listed bucket missing".into()))?;
        let entries: &mut BTreeMap<Vec<u8>, Vec<u8>> = model.entry(name.to_vec()).or_default();
        bucket.for_each(|k, v| {
            entries.insert(k.to_vec(), v.to_vec());
            Ok::<_, Error>(())
        })?;
    }
    Ok(model)
}

/// Every read path over possibly damaged bytes: open, list, iterate, look up each key and a
/// missing one, nested-bucket listing, freelist, full check. Returns the first error.
pub fn exercise(data: &[u8]) -> Result<(), Error> {
    let db = Db::open(data)?;
    let _ = (db.page_size(), db.txid(), db.high_water_mark(), db.db_len());
    let _ = db.free_pages();
    let check = db.check();
    for name in db.bucket_names()? {
        let Some(bucket) = db.bucket(name)? else { continue };
        let _ = bucket.bucket_names();
        let mut keys = Vec::new();
        let walked = bucket.for_each(|k, _| {
            keys.push(k);
            Ok::<_, Error>(())
        });
        for k in keys.iter().take(64) {
            let _ = bucket.get(k);
        }
        let _ = bucket.get(b"\xff\xff no such key");
        walked?;
    }
    check.map(|_| ())
}

pub fn u64_at(data: &[u8], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&data[off..off + 8]);
    u64::from_le_bytes(b)
}

pub fn put_u16(data: &mut [u8], off: usize, v: u16) {
    data[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(data: &mut [u8], off: usize, v: u32) {
    data[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(data: &mut [u8], off: usize, v: u64) {
    data[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Offsets of meta fields (from the start of the page).
pub const META_ROOT: usize = 16 + 16;
pub const META_FREELIST: usize = 16 + 32;
pub const META_PGID: usize = 16 + 40;

/// Recomputes the checksum of the meta struct of the page at `page_off`.
pub fn reseal_meta(data: &mut [u8], page_off: usize) {
    let sum = fnv1a64(&data[page_off + 16..page_off + 16 + 56]);
    put_u64(data, page_off + 16 + 56, sum);
}

/// Sets a meta field on both meta pages and reseals them.
pub fn set_meta_u64(data: &mut [u8], page_size: usize, field: usize, v: u64) {
    for page in 0..2 {
        put_u64(data, page * page_size + field, v);
        reseal_meta(data, page * page_size);
    }
}

/// Offset of the pgid field of branch element `i` of the page at `page`.
pub fn branch_pgid_off(page_size: usize, page: u64, i: usize) -> usize {
    page as usize * page_size + 16 + 16 * i + 8
}

/// A raw page: header plus `body`, padded to `page_size`.
pub fn raw_page(page_size: usize, id: u64, flags: u16, count: u16, body: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; page_size];
    put_u64(&mut p, 0, id);
    put_u16(&mut p, 8, flags);
    put_u16(&mut p, 10, count);
    p[16..16 + body.len()].copy_from_slice(body);
    p
}

/// A meta page (`txid`, root bucket page, high-water mark, no freelist).
pub fn raw_meta(page_size: usize, id: u64, root: u64, hwm: u64, txid: u64) -> Vec<u8> {
    let mut m = vec![0u8; 64];
    put_u32(&mut m, 0, 0xED0CDAED);
    put_u32(&mut m, 4, 2);
    put_u32(&mut m, 8, page_size as u32);
    put_u64(&mut m, 16, root);
    put_u64(&mut m, 32, u64::MAX);
    put_u64(&mut m, 40, hwm);
    put_u64(&mut m, 48, txid);
    let sum = fnv1a64(&m[..56]);
    put_u64(&mut m, 56, sum);
    raw_page(page_size, id, 0x04, 0, &m)
}

/// A file whose only bucket `b` is a chain of `depth` one-element branch pages above a leaf
/// holding key `a`: deeper than bbolt ever builds, to test the depth limit.
pub fn chain_db(depth: u64) -> Vec<u8> {
    let ps = 1024;
    let first = 3;
    let leaf = first + depth;
    let hwm = leaf + 1;
    let mut data = Vec::new();
    data.extend(raw_meta(ps, 0, 2, hwm, 2));
    data.extend(raw_meta(ps, 1, 2, hwm, 1));
    // Root bucket leaf: element "b" -> bucket header (root page 3).
    let mut body = vec![0u8; 16];
    put_u32(&mut body, 0, 1);
    put_u32(&mut body, 4, 16);
    put_u32(&mut body, 8, 1);
    put_u32(&mut body, 12, 16);
    body.push(b'b');
    body.extend(first.to_le_bytes());
    body.extend(0u64.to_le_bytes());
    data.extend(raw_page(ps, 2, 0x02, 1, &body));
    for id in first..leaf {
        let mut body = vec![0u8; 16];
        put_u32(&mut body, 0, 16);
        put_u32(&mut body, 4, 1);
        put_u64(&mut body, 8, id + 1);
        body.push(b'a');
        data.extend(raw_page(ps, id, 0x01, 1, &body));
    }
    let mut body = vec![0u8; 16];
    put_u32(&mut body, 4, 16);
    put_u32(&mut body, 8, 1);
    put_u32(&mut body, 12, 1);
    body.extend(b"av");
    data.extend(raw_page(ps, leaf, 0x02, 1, &body));
    data
}
