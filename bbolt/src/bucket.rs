//! Buckets: a B+tree of branch and leaf pages, or a single leaf page embedded in the
//! bucket's value (an inline bucket).

use crate::db::{Pages, Via};
use crate::error::{show, Error};
use crate::layout::{key_context, page_type, u64_at, LeafElem, Loc, PageView, BUCKET_HEADER_SIZE};

/// Deepest tree a traversal follows. bbolt's trees of a few billion keys are under 10 levels;
/// the limit stops a chain of damaged branch pages from running away.
pub(crate) const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Root<'a> {
    Page(u64),
    Inline(PageView<'a>),
}

/// One bucket of a [`crate::Db`]. Cheap to copy; borrows only the database bytes.
#[derive(Debug, Clone, Copy)]
pub struct Bucket<'a> {
    pages: Pages<'a>,
    name: &'a [u8],
    root: Root<'a>,
    sequence: u64,
}

/// Opens the bucket whose header is `value`, the value of element `name` of bucket `parent`.
pub(crate) fn open_bucket<'a>(
    pages: Pages<'a>,
    parent: &[u8],
    name: &'a [u8],
    value: &'a [u8],
) -> Result<Bucket<'a>, Error> {
    let header = |off| u64_at(value, off);
    let (Some(root), Some(sequence)) = (header(0), header(8)) else {
        return Err(Error::Corrupt(format!(
            "{}: bucket {} has a {}-byte header, expected {BUCKET_HEADER_SIZE}",
            key_context(parent),
            show(name),
            value.len()
        )));
    };
    let root = if root == 0 {
        let bytes = value.get(BUCKET_HEADER_SIZE..).unwrap_or_default();
        let page = PageView::new(Loc::Inline, bytes).map_err(|e| in_bucket(name, e))?;
        if !page.is_leaf() {
            return Err(Error::Corrupt(format!(
                "bucket {}: inline page is a {} page, not a leaf",
                show(name),
                page_type(page.header.flags)
            )));
        }
        Root::Inline(page)
    } else {
        Root::Page(root)
    };
    Ok(Bucket::new(pages, name, root, sequence))
}

fn in_bucket(name: &[u8], e: Error) -> Error {
    match e {
        Error::Corrupt(m) => Error::Corrupt(format!("{}: {m}", key_context(name))),
        other => other,
    }
}

fn page_id(p: &PageView<'_>) -> u64 {
    match p.loc {
        Loc::Page(id) => id,
        Loc::Inline => 0,
    }
}

/// The pages one traversal has reached, so that a page referenced twice (a cycle or a
/// shared subtree, both corruption) is caught instead of walked again.
pub(crate) struct Visited {
    bits: Vec<u64>,
}

impl Visited {
    /// `hwm * page_size` fits in the file, so this costs at most one bit per page of it.
    pub fn new(hwm: u64) -> Self {
        let words = usize::try_from(hwm / 64 + 1).unwrap_or(0);
        Self { bits: vec![0; words] }
    }

    /// Marks `page` and its overflow pages; an error if any was reached before.
    pub fn mark(&mut self, page: &PageView<'_>, via: Via<'_>) -> Result<(), Error> {
        self.mark_pages(page_id(page), page.header.overflow, via)
    }

    pub fn mark_pages(&mut self, first: u64, overflow: u32, via: Via<'_>) -> Result<(), Error> {
        for id in first..=first.saturating_add(u64::from(overflow)) {
            let (word, bit) = (usize::try_from(id / 64).unwrap_or(usize::MAX), id % 64);
            let Some(w) = self.bits.get_mut(word) else {
                return Err(Error::Corrupt(format!("page {id} ({via}): beyond the high-water mark")));
            };
            if *w & (1 << bit) != 0 {
                return Err(Error::Corrupt(format!(
                    "page {first} ({via}): page {id} is reached twice (a cycle or shared page)"
                )));
            }
            *w |= 1 << bit;
        }
        Ok(())
    }

    pub fn contains(&self, id: u64) -> bool {
        let word = usize::try_from(id / 64).ok().and_then(|w| self.bits.get(w));
        word.is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
}

/// A branch page being walked: the next child to visit and the key bound its subtree
/// inherits from the parent.
struct Frame<'a> {
    page: PageView<'a>,
    next: usize,
    upper: Option<&'a [u8]>,
}

/// What a walk calls per page and per element. Their error type is the caller's (any that a
/// read error converts into), so that a caller's own failure ends the walk as itself.
pub(crate) type PageFn<'f, 'a, E> = dyn FnMut(&PageView<'a>, usize) -> Result<(), E> + 'f;
pub(crate) type ElemFn<'f, 'a, E> = dyn FnMut(LeafElem<'a>) -> Result<(), E> + 'f;

impl<'a> Bucket<'a> {
    pub(crate) fn new(pages: Pages<'a>, name: &'a [u8], root: Root<'a>, sequence: u64) -> Self {
        Self { pages, name, root, sequence }
    }

    /// The bucket's name (the last component, for a nested bucket).
    pub fn name(&self) -> &'a [u8] {
        self.name
    }

    /// bbolt's per-bucket sequence counter (`NextSequence`); etcd leaves it 0.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The page of the bucket's root node, or `None` for an inline bucket.
    pub fn root_page(&self) -> Option<u64> {
        match self.root {
            Root::Page(id) => Some(id),
            Root::Inline(_) => None,
        }
    }

    fn ctx(&self) -> String {
        key_context(self.name)
    }

    /// Every key/value of the bucket in key order. A nested bucket inside it is an error
    /// (etcd never nests); use [`Bucket::bucket`] to open one. The callback's error type is the
    /// caller's: the walk stops with it, and the file's faults arrive converted into it.
    pub fn for_each<E: From<Error>>(
        &self,
        mut f: impl FnMut(&'a [u8], &'a [u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk_elements(|e| {
            if e.is_bucket() {
                return Err(Error::Corrupt(format!(
                    "{}: key {} is a nested bucket",
                    self.ctx(),
                    show(e.key)
                ))
                .into());
            }
            f(e.key, e.value)
        })
    }

    /// The value of `key`, or `None`. A nested bucket under `key` is an error, as in
    /// [`Bucket::for_each`].
    pub fn get(&self, key: &[u8]) -> Result<Option<&'a [u8]>, Error> {
        match self.lookup(key)? {
            Some(e) if e.is_bucket() => {
                Err(Error::Corrupt(format!("{}: key {} is a nested bucket", self.ctx(), show(e.key))))
            }
            found => Ok(found.map(|e| e.value)),
        }
    }

    /// The nested bucket `name`, or `None` if there is none or `name` holds a plain value
    /// (bbolt's `Bucket.Bucket` semantics).
    pub fn bucket(&self, name: &[u8]) -> Result<Option<Bucket<'a>>, Error> {
        match self.lookup(name)? {
            Some(e) if e.is_bucket() => open_bucket(self.pages, self.name, e.key, e.value).map(Some),
            _ => Ok(None),
        }
    }

    /// Names of the nested buckets, sorted; plain keys are skipped.
    pub fn bucket_names(&self) -> Result<Vec<&'a [u8]>, Error> {
        let mut names = Vec::new();
        self.walk_elements(|e| {
            if e.is_bucket() {
                names.push(e.key);
            }
            Ok::<_, Error>(())
        })?;
        Ok(names)
    }

    /// A page reachable from this bucket, which must be a branch or leaf page.
    fn load(&self, id: u64, via: Via<'_>) -> Result<PageView<'a>, Error> {
        let page = self.pages.page(id, via).map_err(|e| in_bucket(self.name, e))?;
        if page.is_leaf() || page.is_branch() {
            Ok(page)
        } else {
            Err(Error::Corrupt(format!(
                "{}: page {id} ({via}): {} page where a branch or leaf page was expected",
                self.ctx(),
                page_type(page.header.flags)
            )))
        }
    }

    /// The leaf element of `key`, found by descending the branch pages as bbolt's cursor
    /// does. Bounded by `MAX_DEPTH` pages, so no visited set is needed.
    pub(crate) fn lookup(&self, key: &[u8]) -> Result<Option<LeafElem<'a>>, Error> {
        let mut page = match self.root {
            Root::Inline(p) => p,
            Root::Page(id) => self.load(id, Via::BucketRoot(self.name))?,
        };
        for _ in 0..MAX_DEPTH {
            if page.is_leaf() {
                let (mut lo, mut hi) = (0, page.count());
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    let e = page.leaf(mid)?;
                    match e.key.cmp(key) {
                        std::cmp::Ordering::Less => lo = mid + 1,
                        std::cmp::Ordering::Greater => hi = mid,
                        std::cmp::Ordering::Equal => return Ok(Some(e)),
                    }
                }
                return Ok(None);
            }
            if page.count() == 0 {
                return Err(self.empty_branch(&page));
            }
            // The child is the last element whose key is <= `key` (or the first).
            let (mut lo, mut hi) = (0, page.count());
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if page.branch(mid)?.0 <= key {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            let elem = lo.saturating_sub(1);
            let child = page.branch(elem)?.1;
            page = self.load(child, Via::Branch { page: page_id(&page), elem })?;
        }
        Err(self.too_deep(&page))
    }

    fn empty_branch(&self, page: &PageView<'_>) -> Error {
        Error::Corrupt(format!("{}: {}: branch page without elements", self.ctx(), page.loc))
    }

    fn too_deep(&self, page: &PageView<'_>) -> Error {
        Error::Corrupt(format!("{}: tree deeper than {MAX_DEPTH} levels at {}", self.ctx(), page.loc))
    }

    /// Every leaf element in key order, through a fresh visited set.
    pub(crate) fn walk_elements<E: From<Error>>(
        &self,
        mut f: impl FnMut(LeafElem<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut visited = Visited::new(self.pages.hwm);
        self.walk(&mut visited, &mut |_, _| Ok(()), &mut f)
    }

    /// Walks the tree depth-first without recursion, checking what bbolt's `Check` does:
    /// keys strictly increasing across the whole bucket and within the bounds the branch
    /// keys above them set, every page a branch or leaf, no page reached twice (`visited`
    /// may be shared across buckets to find pages used by two of them). `on_page` sees each
    /// page with its depth (the root is 1).
    pub(crate) fn walk<E: From<Error>>(
        &self,
        visited: &mut Visited,
        on_page: &mut PageFn<'_, 'a, E>,
        on_elem: &mut ElemFn<'_, 'a, E>,
    ) -> Result<(), E> {
        let mut prev = None;
        let root = match self.root {
            Root::Inline(p) => {
                on_page(&p, 1)?;
                return self.leaf_elems(&p, None, None, &mut prev, on_elem);
            }
            Root::Page(id) => {
                let via = Via::BucketRoot(self.name);
                let page = self.load(id, via)?;
                visited.mark(&page, via).map_err(|e| in_bucket(self.name, e))?;
                page
            }
        };
        let mut stack: Vec<Frame<'a>> = Vec::new();
        self.enter(root, None, None, &mut stack, &mut prev, on_page, on_elem)?;
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else { break };
            let i = top.next;
            if i >= top.page.count() {
                stack.pop();
                continue;
            }
            top.next += 1;
            let (lower, child) = top.page.branch(i)?;
            let upper = if i + 1 < top.page.count() { Some(top.page.branch(i + 1)?.0) } else { top.upper };
            let via = Via::Branch { page: page_id(&top.page), elem: i };
            if depth >= MAX_DEPTH {
                return Err(self.too_deep(&top.page).into());
            }
            let page = self.load(child, via)?;
            visited.mark(&page, via).map_err(|e| in_bucket(self.name, e))?;
            self.enter(page, Some(lower), upper, &mut stack, &mut prev, on_page, on_elem)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn enter<E: From<Error>>(
        &self,
        page: PageView<'a>,
        lower: Option<&'a [u8]>,
        upper: Option<&'a [u8]>,
        stack: &mut Vec<Frame<'a>>,
        prev: &mut Option<&'a [u8]>,
        on_page: &mut PageFn<'_, 'a, E>,
        on_elem: &mut ElemFn<'_, 'a, E>,
    ) -> Result<(), E> {
        on_page(&page, stack.len() + 1)?;
        if page.is_leaf() {
            return self.leaf_elems(&page, lower, upper, prev, on_elem);
        }
        if page.count() == 0 {
            return Err(self.empty_branch(&page).into());
        }
        let mut last: Option<&[u8]> = None;
        for i in 0..page.count() {
            let key = page.branch(i)?.0;
            self.check_key(&page, i, key, if i == 0 { lower } else { None }, upper, last)?;
            last = Some(key);
        }
        stack.push(Frame { page, next: 0, upper });
        Ok(())
    }

    fn leaf_elems<E: From<Error>>(
        &self,
        page: &PageView<'a>,
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        prev: &mut Option<&'a [u8]>,
        on_elem: &mut ElemFn<'_, 'a, E>,
    ) -> Result<(), E> {
        for i in 0..page.count() {
            let e = page.leaf(i)?;
            self.check_key(page, i, e.key, lower, upper, *prev)?;
            *prev = Some(e.key);
            on_elem(e)?;
        }
        Ok(())
    }

    fn check_key(
        &self,
        page: &PageView<'_>,
        i: usize,
        key: &[u8],
        lower: Option<&[u8]>,
        upper: Option<&[u8]>,
        prev: Option<&[u8]>,
    ) -> Result<(), Error> {
        let fault = |what: String| {
            Err(Error::Corrupt(format!("{}: {}: element {i} key {} {what}", self.ctx(), page.loc, show(key))))
        };
        if let Some(p) = prev.filter(|p| key <= *p) {
            return fault(format!("is not after the previous key {}", show(p)));
        }
        if let Some(l) = lower.filter(|l| key < *l) {
            return fault(format!("sorts before its parent's branch key {}", show(l)));
        }
        if let Some(u) = upper.filter(|u| key >= *u) {
            return fault(format!("is not before the next branch key {}", show(u)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::PAGE_HEADER_SIZE;

    #[test]
    fn visited_catches_a_second_visit() {
        let mut bytes = vec![0u8; PAGE_HEADER_SIZE];
        crate::layout::PageHeader { id: 5, flags: crate::layout::LEAF_PAGE, count: 0, overflow: 1 }
            .encode(&mut bytes);
        let page = PageView::new(Loc::Page(5), &bytes);
        let mut v = Visited::new(10);
        let via = Via::BucketRoot(b"b");
        assert!(page.as_ref().is_ok_and(|p| v.mark(p, via).is_ok()));
        assert!(v.contains(5) && v.contains(6) && !v.contains(7));
        assert!(page.as_ref().is_ok_and(|p| v.mark(p, via).is_err()));
    }
}
