//! Building one bucket's B+tree bottom-up from entries that arrive sorted: leaf pages are
//! written as they fill, and only (first key, page id) of each is kept to build the branch
//! levels when the bucket ends.

use std::io::Write;

use crate::error::Error;
use crate::layout::{
    put_u32, put_u64, PageHeader, BRANCH_PAGE, ELEMENT_SIZE, LEAF_PAGE, MAX_ELEMENTS, PAGE_HEADER_SIZE,
};

/// The output, written one page (with its overflow pages) at a time, page ids in file order.
pub(crate) struct Sink<W> {
    pub out: W,
    pub page_size: usize,
    pub next_pgid: u64,
    buf: Vec<u8>,
}

impl<W: Write> Sink<W> {
    pub fn new(out: W, page_size: usize, first_pgid: u64) -> Self {
        Self { out, page_size, next_pgid: first_pgid, buf: Vec::new() }
    }

    /// Writes the next page: `fill` appends the bytes after the 16-byte header; the page is
    /// zero-padded to whole pages and its overflow count follows from its length.
    pub fn write_page(
        &mut self,
        flags: u16,
        count: usize,
        fill: impl FnOnce(&mut Vec<u8>),
    ) -> Result<u64, Error> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(PAGE_HEADER_SIZE, 0);
        fill(&mut buf);
        let pages = buf.len().div_ceil(self.page_size).max(1);
        let overflow = u32::try_from(pages - 1).map_err(|_| {
            Error::TooLarge(format!("a page of {} bytes needs too many overflow pages", buf.len()))
        })?;
        let count = u16::try_from(count)
            .map_err(|_| Error::TooLarge(format!("{count} elements do not fit in a page's count")))?;
        let id = self.next_pgid;
        PageHeader { id, flags, count, overflow }.encode(&mut buf);
        buf.resize(pages * self.page_size, 0);
        self.out.write_all(&buf)?;
        self.next_pgid += pages as u64;
        // One huge value must not pin its buffer for the rest of the file.
        if buf.capacity() > 4 * self.page_size {
            buf = Vec::new();
        }
        self.buf = buf;
        Ok(id)
    }
}

/// Element `i` of `n` stores its key position relative to its own address; the data area
/// starts after all `n` elements.
fn element_pos(n: usize, i: usize, data_off: usize) -> Result<u32, Error> {
    let pos = (n - i) * ELEMENT_SIZE + data_off;
    u32::try_from(pos).map_err(|_| Error::TooLarge(format!("element offset {pos} exceeds 32 bits")))
}

fn len32(len: usize, what: &str) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::TooLarge(format!("{what} of {len} bytes exceeds 32 bits")))
}

/// The B+tree of one bucket under construction.
#[derive(Default)]
pub(crate) struct TreeBuilder {
    /// flags, key length and value length of each element of the pending leaf page.
    elems: Vec<(u32, usize, usize)>,
    /// Their keys and values, back to back, as they will sit in the page.
    data: Vec<u8>,
    /// First key and page id of every leaf page written so far.
    leaves: Vec<(Vec<u8>, u64)>,
    last_key: Option<Vec<u8>>,
}

impl TreeBuilder {
    pub fn last_key(&self) -> Option<&[u8]> {
        self.last_key.as_deref()
    }

    /// Appends an element; the caller has checked that `key` sorts after `last_key`.
    pub fn push<W: Write>(
        &mut self,
        sink: &mut Sink<W>,
        flags: u32,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), Error> {
        let ps = sink.page_size;
        let size = ELEMENT_SIZE + key.len() + value.len();
        let alone = PAGE_HEADER_SIZE + size > ps;
        let pending = PAGE_HEADER_SIZE + self.elems.len() * ELEMENT_SIZE + self.data.len();
        if !self.elems.is_empty() && (alone || pending + size > ps || self.elems.len() >= MAX_ELEMENTS) {
            self.flush_leaf(sink)?;
        }
        self.elems.push((flags, key.len(), value.len()));
        self.data.extend_from_slice(key);
        self.data.extend_from_slice(value);
        // An element larger than a page gets its own overflowing page, nothing after it.
        if alone {
            self.flush_leaf(sink)?;
        }
        let last = self.last_key.get_or_insert_with(Vec::new);
        last.clear();
        last.extend_from_slice(key);
        Ok(())
    }

    fn flush_leaf<W: Write>(&mut self, sink: &mut Sink<W>) -> Result<(), Error> {
        let n = self.elems.len();
        let Some(&(_, first_len, _)) = self.elems.first() else { return Ok(()) };
        let first_key = self.data.get(..first_len).unwrap_or_default().to_vec();
        let mut header = vec![0u8; n * ELEMENT_SIZE];
        let mut off = 0;
        for (i, &(flags, k, v)) in self.elems.iter().enumerate() {
            let base = i * ELEMENT_SIZE;
            put_u32(&mut header, base, flags);
            put_u32(&mut header, base + 4, element_pos(n, i, off)?);
            put_u32(&mut header, base + 8, len32(k, "key")?);
            put_u32(&mut header, base + 12, len32(v, "value")?);
            off += k + v;
        }
        let data = &self.data;
        let id = sink.write_page(LEAF_PAGE, n, |buf| {
            buf.extend_from_slice(&header);
            buf.extend_from_slice(data);
        })?;
        self.leaves.push((first_key, id));
        self.elems.clear();
        self.data.clear();
        Ok(())
    }

    /// Writes the pending leaf and the branch levels above the leaves; returns the root page,
    /// or `None` if the tree has no element at all.
    pub fn finish<W: Write>(mut self, sink: &mut Sink<W>) -> Result<Option<u64>, Error> {
        self.flush_leaf(sink)?;
        let mut level = std::mem::take(&mut self.leaves);
        while level.len() > 1 {
            level = write_branch_level(sink, level)?;
        }
        Ok(level.first().map(|&(_, id)| id))
    }
}

/// Groups `children` into branch pages filled up to the page size and writes them; returns
/// (first key, page id) of each branch page, the next level up.
fn write_branch_level<W: Write>(
    sink: &mut Sink<W>,
    children: Vec<(Vec<u8>, u64)>,
) -> Result<Vec<(Vec<u8>, u64)>, Error> {
    let ps = sink.page_size;
    // Page boundaries. A page takes at least two children even when their keys overflow it,
    // so that every level is at most half the one below and the loop ends.
    let mut bounds: Vec<std::ops::Range<usize>> = Vec::new();
    let (mut start, mut size) = (0, PAGE_HEADER_SIZE);
    for (i, (key, _)) in children.iter().enumerate() {
        let elem = ELEMENT_SIZE + key.len();
        let n = i - start;
        if n >= 2 && (size + elem > ps || n >= MAX_ELEMENTS) {
            bounds.push(start..i);
            (start, size) = (i, PAGE_HEADER_SIZE);
        }
        size += elem;
    }
    bounds.push(start..children.len());
    // A last page with a single child is legal but a needless level for that child; take one
    // from the page before, or merge the two when that one has only two.
    if let [.., prev, last] = bounds.as_mut_slice() {
        if last.len() == 1 {
            if prev.len() >= 3 {
                prev.end -= 1;
                last.start -= 1;
            } else {
                prev.end = last.end;
                bounds.pop();
            }
        }
    }

    let mut parents = Vec::with_capacity(bounds.len());
    let mut children = children.into_iter();
    for range in bounds {
        let page: Vec<(Vec<u8>, u64)> = children.by_ref().take(range.len()).collect();
        let n = page.len();
        let mut header = vec![0u8; n * ELEMENT_SIZE];
        let mut off = 0;
        for (i, (key, id)) in page.iter().enumerate() {
            let base = i * ELEMENT_SIZE;
            put_u32(&mut header, base, element_pos(n, i, off)?);
            put_u32(&mut header, base + 4, len32(key.len(), "key")?);
            put_u64(&mut header, base + 8, *id);
            off += key.len();
        }
        let id = sink.write_page(BRANCH_PAGE, n, |buf| {
            buf.extend_from_slice(&header);
            for (key, _) in &page {
                buf.extend_from_slice(key);
            }
        })?;
        if let Some((first, _)) = page.into_iter().next() {
            parents.push((first, id));
        }
    }
    Ok(parents)
}
