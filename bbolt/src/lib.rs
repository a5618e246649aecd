//! Reading and writing bbolt database files (go.etcd.io/bbolt 1.3.x, file format version 2):
//! the format of etcd's `member/snap/db` backend and of its snapshot files (which append a
//! 32-byte SHA-256 of the database; callers strip or ignore it, [`Db::open`] tolerates it).
//!
//! [`Db`] reads a database held in memory, typically a mapped file. It trusts nothing in the
//! bytes: every offset, length, count and page id is bounds-checked, traversals are iterative,
//! depth-limited and visit a page at most once, and damage is reported as an [`Error`] that
//! names the page, element or bucket at fault.
//!
//! [`Writer`] streams a database out in one pass from sorted buckets and keys, with memory
//! bounded by a page plus one index entry per page of the bucket being written. Its files
//! open in bbolt read-write and pass `bbolt check`.
//!
//! The format, briefly: the file is an array of pages of `page_size` bytes. Pages 0 and 1 are
//! meta pages (bbolt alternates commits between them; the valid one with the higher txid
//! wins). Every bucket, the root bucket included, is a B+tree of branch and leaf pages; a
//! bucket is a leaf element of its parent flagged as a bucket, whose value is the bucket's
//! root page id, or, for a small bucket, the bucket's single leaf page itself ("inline").

mod bucket;
mod check;
mod db;
mod error;
mod layout;
mod tree;
mod writer;

pub use bucket::Bucket;
pub use check::CheckSummary;
pub use db::Db;
pub use error::Error;
pub use layout::{MAX_KEY_SIZE, MAX_PAGE_SIZE, MAX_VALUE_SIZE, MIN_PAGE_SIZE};
pub use writer::Writer;
