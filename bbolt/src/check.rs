//! A full consistency check of a database, after bbolt's `Tx.Check` (`bbolt check`).

use crate::bucket::{open_bucket, Visited};
use crate::db::{Db, Via};
use crate::error::{show, Error};
use crate::layout::ELEMENT_SIZE;

/// What [`Db::check`] found in a consistent database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckSummary {
    /// Buckets at any level, the root bucket not counted.
    pub buckets: u64,
    /// Plain key/value pairs in all buckets.
    pub keys: u64,
    /// Pages in use: meta, freelist and tree pages, overflow pages included.
    pub pages_in_use: u64,
    /// Pages the synced freelist lists, or `None` when the freelist is not synced (bbolt then
    /// treats every unreachable page as free).
    pub free_pages: Option<u64>,
    /// The deepest tree of any bucket, in pages from root to leaf (the root bucket included).
    pub max_depth: usize,
}

impl<'a> Db<'a> {
    /// Walks every bucket, nested ones included, and checks what `bbolt check` does: keys
    /// sorted within every page and within their branch bounds, every page below the
    /// high-water mark used exactly once or free (when the freelist is synced), no page both
    /// free and used, only branch and leaf pages in trees.
    pub fn check(&self) -> Result<CheckSummary, Error> {
        let pages = self.pages;
        let hwm = pages.hwm;
        let mut sum = CheckSummary::default();
        let mut used = Visited::new(hwm);
        used.mark_pages(0, 1, Via::Meta)?;
        sum.pages_in_use = 2;
        if let Some(id) = self.freelist_page() {
            let page = pages.page(id, Via::Freelist)?;
            used.mark(&page, Via::Freelist)?;
            sum.pages_in_use += 1 + u64::from(page.header.overflow);
        }
        let free = self.free_pages()?;

        // Each element takes 16 bytes of its own, so a file cannot hold more; aliased inline
        // buckets (elements of one value pointing at the same bytes) could otherwise make the
        // walk exponential.
        let mut budget = pages.data.len() / ELEMENT_SIZE + 1;
        let mut work = vec![(true, self.root())];
        while let Some((is_root, bucket)) = work.pop() {
            let mut on_page = |p: &crate::layout::PageView<'_>, depth: usize| {
                sum.max_depth = sum.max_depth.max(depth);
                if matches!(p.loc, crate::layout::Loc::Page(_)) {
                    sum.pages_in_use += 1 + u64::from(p.header.overflow);
                }
                Ok(())
            };
            let mut on_elem = |e: crate::layout::LeafElem<'a>| {
                budget = budget.checked_sub(1).ok_or_else(|| {
                    Error::Corrupt("more elements than the file can hold (aliased inline buckets)".into())
                })?;
                if e.is_bucket() {
                    sum.buckets += 1;
                    work.push((false, open_bucket(pages, bucket.name(), e.key, e.value)?));
                } else if is_root {
                    return Err(Error::Corrupt(format!("root bucket: key {} is not a bucket", show(e.key))));
                } else {
                    sum.keys += 1;
                }
                Ok(())
            };
            bucket.walk(&mut used, &mut on_page, &mut on_elem)?;
        }

        if let Some(ids) = free {
            sum.free_pages = Some(ids.len() as u64);
            let mut freed = Visited::new(hwm);
            for &id in &ids {
                if id < 2 || id >= hwm {
                    return Err(Error::Corrupt(format!("freelist: page {id} outside pages 2..{hwm}")));
                }
                if used.contains(id) {
                    return Err(Error::Corrupt(format!("page {id}: both free and in use")));
                }
                if freed.contains(id) {
                    return Err(Error::Corrupt(format!("freelist: page {id} listed twice")));
                }
                freed.mark_pages(id, 0, Via::Freelist)?;
            }
            if let Some(id) = (0..hwm).find(|&id| !used.contains(id) && !freed.contains(id)) {
                return Err(Error::Corrupt(format!("page {id}: unreachable and not free")));
            }
        }
        Ok(sum)
    }
}
