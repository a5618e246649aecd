//! bbolt's on-disk structures (go.etcd.io/bbolt 1.3.x, internal/common in 1.4): the page
//! header, leaf and branch elements, the meta page and the bucket header. bbolt writes them in
//! the machine's byte order; every platform etcd ships for is little-endian, so this is too.

use crate::error::{show, Error};

pub(crate) const PAGE_HEADER_SIZE: usize = 16;
/// Leaf (`flags, pos, ksize, vsize`) and branch (`pos, ksize, pgid`) elements are both 16 bytes.
pub(crate) const ELEMENT_SIZE: usize = 16;
pub(crate) const META_SIZE: usize = 64;
/// The meta checksum covers the struct up to the checksum field.
pub(crate) const META_CHECKSUM_OFFSET: usize = 56;
pub(crate) const BUCKET_HEADER_SIZE: usize = 16;

pub(crate) const MAGIC: u32 = 0xED0C_DAED;
pub(crate) const VERSION: u32 = 2;

pub(crate) const BRANCH_PAGE: u16 = 0x01;
pub(crate) const LEAF_PAGE: u16 = 0x02;
pub(crate) const META_PAGE: u16 = 0x04;
pub(crate) const FREELIST_PAGE: u16 = 0x10;

/// Leaf element flag: the value is a bucket header (a nested bucket), not user data.
pub(crate) const BUCKET_LEAF_FLAG: u32 = 0x01;

/// `meta.freelist` when the freelist is not synced to disk (etcd sets `NoFreelistSync`).
pub(crate) const NO_FREELIST: u64 = u64::MAX;

/// bbolt refuses longer keys (`ErrKeyTooLarge`).
pub const MAX_KEY_SIZE: usize = 32768;
/// bbolt refuses longer values (`ErrValueTooLarge`).
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;
/// bbolt probes page sizes from 1 KiB to 16 MiB when page 0 is unreadable; anything outside
/// that range cannot have been written by it.
pub const MIN_PAGE_SIZE: usize = 1024;
pub const MAX_PAGE_SIZE: usize = 1 << 24;
/// bbolt panics writing a node of 0xFFFF or more elements (the freelist uses 0xFFFF as an
/// escape), so a page never holds more.
pub(crate) const MAX_ELEMENTS: usize = 0xFFFE;

pub(crate) fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off.checked_add(2)?)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s: [u8; 4] = b.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    let s: [u8; 8] = b.get(off..off.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

pub(crate) fn put_u16(b: &mut [u8], off: usize, v: u16) {
    if let Some(s) = b.get_mut(off..off + 2) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn put_u32(b: &mut [u8], off: usize, v: u32) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

pub(crate) fn put_u64(b: &mut [u8], off: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + 8) {
        s.copy_from_slice(&v.to_le_bytes());
    }
}

/// FNV-1a 64-bit, Go's `hash/fnv.New64a`, which bbolt uses for the meta checksum.
pub(crate) fn fnv1a64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub(crate) fn valid_page_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_PAGE_SIZE as u64..=MAX_PAGE_SIZE as u64).contains(&size)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(Self {
            id: u64_at(b, 0)?,
            flags: u16_at(b, 8)?,
            count: u16_at(b, 10)?,
            overflow: u32_at(b, 12)?,
        })
    }

    pub fn encode(&self, b: &mut [u8]) {
        put_u64(b, 0, self.id);
        put_u16(b, 8, self.flags);
        put_u16(b, 10, self.count);
        put_u32(b, 12, self.overflow);
    }
}

pub(crate) fn page_type(flags: u16) -> String {
    match flags {
        BRANCH_PAGE => "branch".into(),
        LEAF_PAGE => "leaf".into(),
        META_PAGE => "meta".into(),
        FREELIST_PAGE => "freelist".into(),
        other => format!("unknown<{other:02x}>"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    pub magic: u32,
    pub version: u32,
    pub page_size: u32,
    pub flags: u32,
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    pub pgid: u64,
    pub txid: u64,
    pub checksum: u64,
}

impl Meta {
    /// Parses the 64-byte meta struct that follows the page header of pages 0 and 1.
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(Self {
            magic: u32_at(b, 0)?,
            version: u32_at(b, 4)?,
            page_size: u32_at(b, 8)?,
            flags: u32_at(b, 12)?,
            root: u64_at(b, 16)?,
            sequence: u64_at(b, 24)?,
            freelist: u64_at(b, 32)?,
            pgid: u64_at(b, 40)?,
            txid: u64_at(b, 48)?,
            checksum: u64_at(b, 56)?,
        })
    }

    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut b = [0u8; META_SIZE];
        put_u32(&mut b, 0, self.magic);
        put_u32(&mut b, 4, self.version);
        put_u32(&mut b, 8, self.page_size);
        put_u32(&mut b, 12, self.flags);
        put_u64(&mut b, 16, self.root);
        put_u64(&mut b, 24, self.sequence);
        put_u64(&mut b, 32, self.freelist);
        put_u64(&mut b, 40, self.pgid);
        put_u64(&mut b, 48, self.txid);
        let sum = fnv1a64(&b[..META_CHECKSUM_OFFSET]);
        put_u64(&mut b, 56, sum);
        b
    }

    /// bbolt's `Validate` (magic, version, checksum) plus a sane page size, since every
    /// offset in the file is derived from it. `raw` is the 64-byte struct.
    pub fn validate(&self, raw: &[u8]) -> Result<(), String> {
        if self.magic != MAGIC {
            return Err(format!("bad magic {:#010x}", self.magic));
        }
        if self.version != VERSION {
            return Err(format!("version {} (only version {VERSION} exists)", self.version));
        }
        let covered = raw.get(..META_CHECKSUM_OFFSET).ok_or("truncated")?;
        if fnv1a64(covered) != self.checksum {
            return Err("checksum mismatch".into());
        }
        if !valid_page_size(u64::from(self.page_size)) {
            return Err(format!(
                "page size {} is not a power of two in {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}",
                self.page_size
            ));
        }
        Ok(())
    }
}

/// One element of a leaf page, borrowed from the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeafElem<'a> {
    pub flags: u32,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

impl LeafElem<'_> {
    pub fn is_bucket(&self) -> bool {
        self.flags & BUCKET_LEAF_FLAG != 0
    }
}

/// Where a page came from, for error messages: a page of the file or the page embedded in
/// an inline bucket's value.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Loc {
    Page(u64),
    Inline,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Page(id) => write!(f, "page {id}"),
            Loc::Inline => f.write_str("inline bucket page"),
        }
    }
}

/// A page whose element array is known to lie within its bytes; element contents are still
/// checked on every access.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PageView<'a> {
    pub loc: Loc,
    pub header: PageHeader,
    pub bytes: &'a [u8],
}

impl<'a> PageView<'a> {
    pub fn new(loc: Loc, bytes: &'a [u8]) -> Result<Self, Error> {
        let header = PageHeader::parse(bytes).ok_or_else(|| {
            Error::Corrupt(format!("{loc}: {} bytes, too short for a page header", bytes.len()))
        })?;
        let view = Self { loc, header, bytes };
        if matches!(header.flags, BRANCH_PAGE | LEAF_PAGE) {
            let end = PAGE_HEADER_SIZE + usize::from(header.count) * ELEMENT_SIZE;
            if end > bytes.len() {
                return Err(Error::Corrupt(format!(
                    "{loc}: {} elements do not fit in {} bytes",
                    header.count,
                    bytes.len()
                )));
            }
        }
        Ok(view)
    }

    pub fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    pub fn is_leaf(&self) -> bool {
        self.header.flags == LEAF_PAGE
    }

    pub fn is_branch(&self) -> bool {
        self.header.flags == BRANCH_PAGE
    }

    fn elem_base(&self, i: usize) -> Result<usize, Error> {
        if i >= self.count() {
            return Err(Error::Corrupt(format!("{}: element {i} of {}", self.loc, self.count())));
        }
        Ok(PAGE_HEADER_SIZE + i * ELEMENT_SIZE)
    }

    fn field(&self, i: usize, what: &str, v: Option<u32>) -> Result<usize, Error> {
        v.map(|v| v as usize)
            .ok_or_else(|| Error::Corrupt(format!("{}: element {i} {what} out of bounds", self.loc)))
    }

    fn offset(&self, i: usize, base: usize, pos: usize) -> Result<usize, Error> {
        base.checked_add(pos)
            .ok_or_else(|| Error::Corrupt(format!("{}: element {i} key out of bounds", self.loc)))
    }

    /// Bytes `[base + pos, base + pos + len)`, where bbolt stores keys and values relative to
    /// the element's own address.
    fn slice(&self, i: usize, what: &str, start: usize, len: usize) -> Result<&'a [u8], Error> {
        start
            .checked_add(len)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or_else(|| Error::Corrupt(format!("{}: element {i} {what} out of bounds", self.loc)))
    }

    pub fn leaf(&self, i: usize) -> Result<LeafElem<'a>, Error> {
        let base = self.elem_base(i)?;
        let flags = u32_at(self.bytes, base)
            .ok_or_else(|| Error::Corrupt(format!("{}: element {i} flags out of bounds", self.loc)))?;
        let pos = self.field(i, "pos", u32_at(self.bytes, base + 4))?;
        let ksize = self.field(i, "ksize", u32_at(self.bytes, base + 8))?;
        let vsize = self.field(i, "vsize", u32_at(self.bytes, base + 12))?;
        let kstart = self.offset(i, base, pos)?;
        let key = self.slice(i, "key", kstart, ksize)?;
        // The key slice ended within the page, so this cannot overflow.
        let value = self.slice(i, "value", kstart + ksize, vsize)?;
        Ok(LeafElem { flags, key, value })
    }

    pub fn branch(&self, i: usize) -> Result<(&'a [u8], u64), Error> {
        let base = self.elem_base(i)?;
        let pos = self.field(i, "pos", u32_at(self.bytes, base))?;
        let ksize = self.field(i, "ksize", u32_at(self.bytes, base + 4))?;
        let pgid = u64_at(self.bytes, base + 8)
            .ok_or_else(|| Error::Corrupt(format!("{}: element {i} pgid out of bounds", self.loc)))?;
        let key = self.slice(i, "key", self.offset(i, base, pos)?, ksize)?;
        Ok((key, pgid))
    }
}

/// Encodes a bucket header: the value of a leaf element that carries `BUCKET_LEAF_FLAG`.
pub(crate) fn bucket_header(root: u64, sequence: u64) -> [u8; BUCKET_HEADER_SIZE] {
    let mut b = [0u8; BUCKET_HEADER_SIZE];
    put_u64(&mut b, 0, root);
    put_u64(&mut b, 8, sequence);
    b
}

/// The value bbolt stores for a bucket created and never filled: an inline bucket (root 0)
/// followed by an empty leaf page header.
pub(crate) fn empty_inline_bucket() -> [u8; BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE] {
    let mut b = [0u8; BUCKET_HEADER_SIZE + PAGE_HEADER_SIZE];
    PageHeader { id: 0, flags: LEAF_PAGE, count: 0, overflow: 0 }.encode(&mut b[BUCKET_HEADER_SIZE..]);
    b
}

pub(crate) fn key_context(bucket: &[u8]) -> String {
    if bucket.is_empty() {
        "root bucket".into()
    } else {
        format!("bucket {}", show(bucket))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_go() {
        // Values of Go's fnv.New64a for "" and "a".
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn meta_round_trips() {
        let m = Meta {
            magic: MAGIC,
            version: VERSION,
            page_size: 4096,
            flags: 0,
            root: 3,
            sequence: 0,
            freelist: 2,
            pgid: 4,
            txid: 7,
            checksum: 0,
        };
        let raw = m.encode();
        let back = Meta::parse(&raw).map(|b| Meta { checksum: 0, ..b });
        assert_eq!(back, Some(m));
        assert!(Meta::parse(&raw).is_some_and(|b| b.validate(&raw).is_ok()));
    }
}
