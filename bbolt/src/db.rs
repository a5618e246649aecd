//! Opening a bbolt file: choosing the meta page and handing out bounds-checked pages.

use crate::bucket::{open_bucket, Bucket, Root};
use crate::error::{show, Error};
use crate::layout::{
    page_type, valid_page_size, Loc, Meta, PageHeader, PageView, FREELIST_PAGE, MAGIC, MAX_PAGE_SIZE,
    META_SIZE, MIN_PAGE_SIZE, NO_FREELIST, PAGE_HEADER_SIZE,
};

/// The page size bbolt falls back to when page 0 cannot tell it (the usual OS page size).
const DEFAULT_PAGE_SIZE: usize = 4096;

/// Why a page is being loaded, so that an error says which reference was bad.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Via<'a> {
    Branch { page: u64, elem: usize },
    BucketRoot(&'a [u8]),
    Freelist,
    Meta,
}

impl std::fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Branch { page, elem } => write!(f, "from element {elem} of branch page {page}"),
            Via::BucketRoot([]) => f.write_str("root of the root bucket"),
            Via::BucketRoot(name) => write!(f, "root of bucket {}", show(name)),
            Via::Freelist => f.write_str("the freelist"),
            Via::Meta => f.write_str("a meta page"),
        }
    }
}

/// The file's pages below the high-water mark. Copy, so buckets can outlive the `Db` borrow
/// and keep only the mapped bytes' lifetime.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pages<'a> {
    pub data: &'a [u8],
    pub page_size: usize,
    /// `meta.pgid`: pages `[0, hwm)` exist; `open` checked `hwm * page_size <= data.len()`.
    pub hwm: u64,
}

impl<'a> Pages<'a> {
    /// Page `id` with its overflow pages, checked to lie below the high-water mark and to
    /// name itself: a page whose header names another id is a stale or wild reference.
    pub fn page(&self, id: u64, via: Via<'_>) -> Result<PageView<'a>, Error> {
        if id < 2 {
            return Err(Error::Corrupt(format!("page {id} ({via}): is a meta page")));
        }
        if id >= self.hwm {
            return Err(Error::Corrupt(format!(
                "page {id} ({via}): beyond the high-water mark {}",
                self.hwm
            )));
        }
        let start =
            self.offset(id).ok_or_else(|| Error::Corrupt(format!("page {id} ({via}): offset overflows")))?;
        let header = start
            .checked_add(PAGE_HEADER_SIZE)
            .and_then(|end| self.data.get(start..end))
            .and_then(PageHeader::parse)
            .ok_or_else(|| Error::Corrupt(format!("page {id} ({via}): beyond the end of the file")))?;
        if header.id != id {
            return Err(Error::Corrupt(format!("page {id} ({via}): header names page {}", header.id)));
        }
        let end_page = id.checked_add(u64::from(header.overflow)).and_then(|v| v.checked_add(1));
        let bytes = end_page
            .filter(|&end| end <= self.hwm)
            .and_then(|end| self.offset(end))
            .and_then(|end| self.data.get(start..end))
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "page {id} ({via}): {} overflow pages run past the high-water mark {}",
                    header.overflow, self.hwm
                ))
            })?;
        PageView::new(Loc::Page(id), bytes)
    }

    fn offset(&self, id: u64) -> Option<usize> {
        usize::try_from(id).ok()?.checked_mul(self.page_size)
    }
}

/// A read-only view of a bbolt database held in memory (typically a mapped file).
///
/// Every offset, length, count and page id read from the bytes is checked: damaged input
/// yields an [`Error`], never a panic, and traversals are bounded in depth and visit each
/// page at most once.
#[derive(Debug, Clone, Copy)]
pub struct Db<'a> {
    pub(crate) pages: Pages<'a>,
    pub(crate) meta: Meta,
}

/// Why a meta page is unusable, and whether it at least had bbolt's magic (which makes the
/// file a damaged bbolt file rather than something else).
struct MetaFault {
    magic: bool,
    msg: String,
}

impl MetaFault {
    fn new(magic: bool, msg: impl Into<String>) -> Self {
        Self { magic, msg: msg.into() }
    }
}

/// Reads and validates the meta struct of the page at `offset`.
fn read_meta(data: &[u8], offset: usize) -> Result<Meta, MetaFault> {
    let raw = offset
        .checked_add(PAGE_HEADER_SIZE)
        .and_then(|s| Some(s..s.checked_add(META_SIZE)?))
        .and_then(|r| data.get(r))
        .ok_or_else(|| MetaFault::new(false, format!("beyond the end of the {}-byte file", data.len())))?;
    let meta = Meta::parse(raw).ok_or_else(|| MetaFault::new(false, "truncated"))?;
    meta.validate(raw).map_err(|msg| MetaFault::new(meta.magic == MAGIC, msg))?;
    Ok(meta)
}

impl<'a> Db<'a> {
    /// Opens the database in `data`: the bbolt file, optionally followed by other bytes (an
    /// etcd snapshot's SHA-256 trailer) past the last page.
    ///
    /// Uses the valid meta page with the highest transaction id, as bbolt does.
    pub fn open(data: &'a [u8]) -> Result<Self, Error> {
        if data.is_empty() {
            return Err(Error::NotBbolt("empty file".into()));
        }
        let m0 = read_meta(data, 0);
        let m1 = match &m0 {
            Ok(m) => read_meta(data, m.page_size as usize).and_then(|m1| {
                if m1.page_size == m.page_size {
                    Ok(m1)
                } else {
                    let msg =
                        format!("page size {} differs from meta page 0's {}", m1.page_size, m.page_size);
                    Err(MetaFault::new(true, msg))
                }
            }),
            Err(_) => Self::probe_meta1(data),
        };
        let (which, meta) = match (m0, m1) {
            (Ok(a), Ok(b)) if b.txid > a.txid => (1, b),
            (Ok(a), _) => (0, a),
            (Err(_), Ok(b)) => (1, b),
            (Err(e0), Err(e1)) => {
                let msg = format!("meta page 0: {}; meta page 1: {}", e0.msg, e1.msg);
                return Err(if e0.magic || e1.magic {
                    Error::Corrupt(format!("no valid meta page: {msg}"))
                } else {
                    Error::NotBbolt(msg)
                });
            }
        };
        let db = Self { pages: Pages { data, page_size: meta.page_size as usize, hwm: meta.pgid }, meta };
        db.check_meta(which)?;
        Ok(db)
    }

    /// Page 0 is unusable, so its page size field cannot be trusted: look for page 1 at every
    /// page size bbolt could have used, starting with page 0's claim and the usual 4096.
    fn probe_meta1(data: &[u8]) -> Result<Meta, MetaFault> {
        let claimed = crate::layout::u32_at(data, PAGE_HEADER_SIZE + 8)
            .map(u64::from)
            .filter(|&s| valid_page_size(s))
            .and_then(|s| usize::try_from(s).ok());
        let mut first: Option<MetaFault> = None;
        let mut magic = false;
        let mut size = MIN_PAGE_SIZE;
        let probes = std::iter::from_fn(|| {
            let this = size;
            size = size.checked_mul(2)?;
            (this <= MAX_PAGE_SIZE).then_some(this)
        });
        for ps in claimed.into_iter().chain([DEFAULT_PAGE_SIZE]).chain(probes) {
            let fault = match read_meta(data, ps) {
                Ok(m) if m.page_size as usize == ps => return Ok(m),
                Ok(m) => MetaFault::new(true, format!("claims page size {}", m.page_size)),
                Err(e) => e,
            };
            magic |= fault.magic;
            first.get_or_insert(MetaFault::new(fault.magic, format!("at offset {ps}: {}", fault.msg)));
        }
        let mut fault = first.unwrap_or_else(|| MetaFault::new(false, "not found"));
        fault.magic = magic;
        Err(fault)
    }

    fn check_meta(&self, which: u64) -> Result<(), Error> {
        let m = &self.meta;
        let ctx = format!("meta page {which} (txid {})", m.txid);
        let len = self.pages.data.len();
        let size = m.pgid.checked_mul(u64::from(m.page_size));
        if size.is_none_or(|s| s > len as u64) {
            return Err(Error::Corrupt(format!(
                "{ctx}: describes {} pages of {} bytes but the file has only {len} bytes (truncated?)",
                m.pgid, m.page_size
            )));
        }
        if m.root < 2 || m.root >= m.pgid {
            return Err(Error::Corrupt(format!(
                "{ctx}: root bucket page {} outside pages 2..{}",
                m.root, m.pgid
            )));
        }
        if m.freelist != NO_FREELIST && (m.freelist < 2 || m.freelist >= m.pgid) {
            return Err(Error::Corrupt(format!(
                "{ctx}: freelist page {} outside pages 2..{}",
                m.freelist, m.pgid
            )));
        }
        Ok(())
    }

    pub fn page_size(&self) -> usize {
        self.pages.page_size
    }

    /// The transaction id of the meta page in use.
    pub fn txid(&self) -> u64 {
        self.meta.txid
    }

    /// `meta.pgid`: the number of pages in use, meta pages included.
    pub fn high_water_mark(&self) -> u64 {
        self.meta.pgid
    }

    /// Bytes of the data that belong to the database (`high_water_mark * page_size`); the
    /// rest, if any, is a trailer or unused file space.
    pub fn db_len(&self) -> u64 {
        self.meta.pgid.saturating_mul(u64::from(self.meta.page_size))
    }

    /// The freelist page, or `None` when the freelist is not synced (etcd's `NoFreelistSync`).
    pub fn freelist_page(&self) -> Option<u64> {
        (self.meta.freelist != NO_FREELIST).then_some(self.meta.freelist)
    }

    /// The free page ids the synced freelist lists, or `None` when it is not synced.
    pub fn free_pages(&self) -> Result<Option<Vec<u64>>, Error> {
        let Some(id) = self.freelist_page() else { return Ok(None) };
        let page = self.pages.page(id, Via::Freelist)?;
        if page.header.flags != FREELIST_PAGE {
            return Err(Error::Corrupt(format!(
                "page {id} (the freelist): {} page where a freelist page was expected",
                page_type(page.header.flags)
            )));
        }
        let body = page.bytes.get(PAGE_HEADER_SIZE..).unwrap_or_default();
        // A count of 0xFFFF means the real count is the first id slot.
        let (skip, count) = if page.header.count == 0xFFFF {
            let c = crate::layout::u64_at(body, 0)
                .ok_or_else(|| Error::Corrupt(format!("page {id} (the freelist): count missing")))?;
            (1usize, c)
        } else {
            (0, u64::from(page.header.count))
        };
        let fits = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_add(skip))
            .and_then(|n| n.checked_mul(8))
            .filter(|&n| n <= body.len());
        let Some(end) = fits else {
            return Err(Error::Corrupt(format!(
                "page {id} (the freelist): {count} ids do not fit in {} bytes",
                body.len()
            )));
        };
        let ids = body
            .get(skip * 8..end)
            .unwrap_or_default()
            .chunks_exact(8)
            .filter_map(|c| crate::layout::u64_at(c, 0))
            .collect();
        Ok(Some(ids))
    }

    pub(crate) fn root(&self) -> Bucket<'a> {
        Bucket::new(self.pages, b"", Root::Page(self.meta.root), self.meta.sequence)
    }

    /// Names of the top-level buckets, sorted.
    pub fn bucket_names(&self) -> Result<Vec<&'a [u8]>, Error> {
        let mut names = Vec::new();
        self.root().walk_elements(|e| {
            if !e.is_bucket() {
                return Err(Error::Corrupt(format!("root bucket: key {} is not a bucket", show(e.key))));
            }
            names.push(e.key);
            Ok(())
        })?;
        Ok(names)
    }

    /// The top-level bucket `name`, or `None` if there is none.
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, Error> {
        match self.root().lookup(name)? {
            None => Ok(None),
            Some(e) if !e.is_bucket() => {
                Err(Error::Corrupt(format!("root bucket: key {} is not a bucket", show(e.key))))
            }
            Some(e) => open_bucket(self.pages, b"", e.key, e.value).map(Some),
        }
    }
}
