//! Streaming a whole database out in one pass, as `bbolt compact` would lay it out: pages
//! filled completely, no free pages, the tree of each bucket contiguous.

use std::io::{Seek, SeekFrom, Write};

use crate::error::{show, Error};
use crate::layout::{
    bucket_header, empty_inline_bucket, valid_page_size, Meta, PageHeader, BUCKET_LEAF_FLAG, FREELIST_PAGE,
    LEAF_PAGE, MAGIC, MAX_KEY_SIZE, MAX_PAGE_SIZE, MAX_VALUE_SIZE, META_PAGE, MIN_PAGE_SIZE,
    PAGE_HEADER_SIZE, VERSION,
};
use crate::tree::{Sink, TreeBuilder};

/// Transaction ids of the two meta pages. bbolt writes the meta of transaction `t` to page
/// `t % 2`, so page 0 holds the even (newer) one and the next writer overwrites page 1.
const META_TXIDS: [(u64, u64); 2] = [(0, 2), (1, 1)];

/// Writes a bbolt file: buckets in strictly increasing name order, keys strictly increasing
/// within each bucket.
///
/// Memory is one page (a page holding a value larger than a page is that large) and one
/// (first key, page id) per page written for the current bucket; the root bucket's entries
/// (one per bucket) are paged out the same way. The output must start empty: data pages are
/// written from page 2 on and the meta pages last, by seeking back to the start.
pub struct Writer<W: Write + Seek> {
    sink: Sink<W>,
    /// The root bucket's tree: one element per finished bucket.
    root: TreeBuilder,
    current: Option<(Vec<u8>, TreeBuilder)>,
    /// Set when a write failed part-way: the output is then in no state to continue.
    failed: bool,
}

impl<W: Write + Seek> Writer<W> {
    /// Starts a database with pages of `page_size` bytes (bbolt uses the OS page size, 4096
    /// on the platforms etcd runs on).
    pub fn new(mut out: W, page_size: usize) -> Result<Self, Error> {
        if !valid_page_size(page_size as u64) {
            return Err(Error::InvalidArgument(format!(
                "page size {page_size} is not a power of two in {MIN_PAGE_SIZE}..={MAX_PAGE_SIZE}"
            )));
        }
        out.seek(SeekFrom::Start(2 * page_size as u64))?;
        Ok(Self {
            sink: Sink::new(out, page_size, 2),
            root: TreeBuilder::default(),
            current: None,
            failed: false,
        })
    }

    pub fn page_size(&self) -> usize {
        self.sink.page_size
    }

    /// Pages written so far, the two meta pages included.
    pub fn pages_written(&self) -> u64 {
        self.sink.next_pgid
    }

    fn usable(&self) -> Result<(), Error> {
        if self.failed {
            Err(Error::InvalidArgument("the writer failed earlier and cannot continue".into()))
        } else {
            Ok(())
        }
    }

    /// Records the outcome of a step that may have written part of the output.
    fn track<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        self.failed |= r.is_err();
        r
    }

    /// Ends the current bucket, if any, and starts bucket `name`, which must sort after
    /// every bucket before it.
    pub fn bucket(&mut self, name: &[u8]) -> Result<(), Error> {
        self.usable()?;
        if name.is_empty() {
            return Err(Error::InvalidArgument("bucket name is empty (bbolt requires one)".into()));
        }
        if name.len() > MAX_KEY_SIZE {
            return Err(Error::TooLarge(format!("bucket name of {} bytes (max {MAX_KEY_SIZE})", name.len())));
        }
        let last = self.current.as_ref().map(|(n, _)| n.as_slice()).or(self.root.last_key());
        if let Some(last) = last.filter(|last| name <= *last) {
            return Err(Error::Unsorted(format!("bucket {} is not after bucket {}", show(name), show(last))));
        }
        let r = self.end_bucket();
        self.track(r)?;
        self.current = Some((name.to_vec(), TreeBuilder::default()));
        Ok(())
    }

    /// Adds `key` to the current bucket; it must sort after the bucket's previous key.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.usable()?;
        let Some((name, tree)) = self.current.as_mut() else {
            return Err(Error::InvalidArgument("put before the first bucket".into()));
        };
        if key.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "bucket {}: empty key (bbolt requires one)",
                show(name)
            )));
        }
        if key.len() > MAX_KEY_SIZE {
            return Err(Error::TooLarge(format!(
                "bucket {}: key of {} bytes (max {MAX_KEY_SIZE})",
                show(name),
                key.len()
            )));
        }
        if value.len() > MAX_VALUE_SIZE {
            return Err(Error::TooLarge(format!(
                "bucket {}: key {}: value of {} bytes (max {MAX_VALUE_SIZE})",
                show(name),
                show(key),
                value.len()
            )));
        }
        if let Some(last) = tree.last_key().filter(|last| key <= *last) {
            return Err(Error::Unsorted(format!(
                "bucket {}: key {} is not after the previous key {}",
                show(name),
                show(key),
                show(last)
            )));
        }
        let r = tree.push(&mut self.sink, 0, key, value);
        self.track(r)
    }

    /// Writes the current bucket's branch pages and adds it to the root bucket: with its
    /// root page, or inline (bbolt's layout of a bucket never written to) when empty.
    fn end_bucket(&mut self) -> Result<(), Error> {
        let Some((name, tree)) = self.current.take() else { return Ok(()) };
        match tree.finish(&mut self.sink)? {
            Some(root) => self.root.push(&mut self.sink, BUCKET_LEAF_FLAG, &name, &bucket_header(root, 0)),
            None => self.root.push(&mut self.sink, BUCKET_LEAF_FLAG, &name, &empty_inline_bucket()),
        }
    }

    /// Writes the root bucket's pages, an empty freelist page and both meta pages, flushes,
    /// and returns the output, positioned at the end of the database, with the database's
    /// length (high-water mark × page size).
    pub fn finish(mut self) -> Result<(W, u64), Error> {
        self.usable()?;
        self.end_bucket()?;
        let root = std::mem::take(&mut self.root);
        let sink = &mut self.sink;
        let root = match root.finish(sink)? {
            Some(id) => id,
            // No bucket at all: the root bucket is an empty leaf, as in a new bbolt file.
            None => sink.write_page(LEAF_PAGE, 0, |_| {})?,
        };
        let freelist = sink.write_page(FREELIST_PAGE, 0, |_| {})?;
        let hwm = sink.next_pgid;
        let ps = sink.page_size;
        let len = hwm * ps as u64;

        let mut metas = vec![0u8; 2 * ps];
        for (page, txid) in META_TXIDS {
            let meta = Meta {
                magic: MAGIC,
                version: VERSION,
                page_size: ps as u32,
                flags: 0,
                root,
                sequence: 0,
                freelist,
                pgid: hwm,
                txid,
                checksum: 0,
            };
            let start = page as usize * ps;
            if let Some(buf) = metas.get_mut(start..start + ps) {
                PageHeader { id: page, flags: META_PAGE, count: 0, overflow: 0 }.encode(buf);
                if let Some(m) = buf.get_mut(PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + crate::layout::META_SIZE) {
                    m.copy_from_slice(&meta.encode());
                }
            }
        }
        let out = &mut sink.out;
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&metas)?;
        out.seek(SeekFrom::Start(len))?;
        out.flush()?;
        Ok((self.sink.out, len))
    }
}
