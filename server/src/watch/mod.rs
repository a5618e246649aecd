//! `WatchHub`: delivers the events of applied revisions to watchers (etcd's `watchable_store.go`).
//!
//! Every watcher is either *synced* (it has been sent every event up to the current revision;
//! new events are pushed to it as they are applied) or *unsynced* (it is behind: its stream's
//! syncer task reads its missing events from the MVCC history and moves it to synced once it
//! has caught up). The apply path only ever `try_send`s to a stream's bounded channel: when a
//! stream is full its watchers become unsynced and catch up from storage later, so a slow or
//! stalled client never blocks apply, writers or other streams, and never loses an event.
//!
//! Invariants, per watcher: events go out in revision order, each revision once, all events of a
//! revision in one response; `next_rev` is the first revision not yet sent.

mod syncer;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use rkv_proto::etcdserverpb::{ResponseHeader, WatchResponse};
use rkv_proto::mvccpb::{event::EventType, Event};
use rkv_storage::Store;
use tokio::sync::{mpsc, Notify};
use tracing::debug;

pub use syncer::{fragments, run_syncer};

/// Responses a stream may have queued before its watchers fall back to catching up.
pub const STREAM_BUFFER: usize = 128;

pub type StreamId = u64;
pub type WatchId = i64;

/// The watch ID etcd's progress responses carry.
pub const PROGRESS_WATCH_ID: WatchId = -1;

/// What a watcher watches and how (from a WatchCreateRequest).
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// None: only `key`; Some(empty): every key >= `key`; Some(end): `[key, end)`.
    pub end: Option<Vec<u8>>,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
}

impl WatchSpec {
    fn matches(&self, key: &[u8]) -> bool {
        match &self.end {
            None => key == self.key.as_slice(),
            Some(end) => key >= self.key.as_slice() && (end.is_empty() || key < end.as_slice()),
        }
    }

    fn wants(&self, ev: &Event) -> bool {
        let is_put = ev.r#type == EventType::Put as i32;
        if (is_put && self.no_put) || (!is_put && self.no_delete) {
            return false;
        }
        ev.kv.as_ref().is_some_and(|kv| self.matches(&kv.key))
    }

    /// The events of `evs` this watcher gets, at or after `from`, prev_kv only if asked for.
    fn select(&self, evs: &[Event], from: i64) -> Vec<Event> {
        evs.iter()
            .filter(|ev| ev.kv.as_ref().is_some_and(|kv| kv.mod_revision >= from) && self.wants(ev))
            .map(|ev| {
                let mut ev = ev.clone();
                if !self.prev_kv {
                    ev.prev_kv = None;
                }
                ev
            })
            .collect()
    }
}

#[derive(Debug)]
struct Watcher {
    spec: WatchSpec,
    /// Not yet activated (its Created response is on its way): receives nothing.
    active: bool,
    synced: bool,
    next_rev: i64,
    /// Events were sent since the last periodic progress notification.
    sent_since_progress: bool,
}

struct Stream {
    tx: mpsc::Sender<WatchResponse>,
    syncer: Arc<Notify>,
    next_auto_id: WatchId,
    /// A progress request arrived while a watcher was unsynced: answer once all are synced.
    deferred_progress: bool,
}

struct HubInner {
    current_rev: i64,
    next_stream: StreamId,
    streams: HashMap<StreamId, Stream>,
    watchers: HashMap<(StreamId, WatchId), Watcher>,
}

/// Why a watch could not be created (etcd's `CancelReason` strings).
#[derive(Debug, PartialEq, Eq)]
pub enum CreateError {
    DuplicateId,
    EmptyRange,
}

impl CreateError {
    pub fn reason(&self) -> &'static str {
        match self {
            CreateError::DuplicateId => "mvcc: duplicate watch ID provided on the WatchStream",
            CreateError::EmptyRange => "mvcc: watcher range is empty",
        }
    }
}

pub struct WatchHub {
    store: Arc<Store>,
    /// Above this size a response is split for watchers that asked for fragments.
    pub max_response_bytes: usize,
    header: ResponseHeader,
    /// The raft term responses report; it moves with elections.
    term: std::sync::atomic::AtomicU64,
    inner: Mutex<HubInner>,
    prev_kv_watchers: AtomicUsize,
    /// When recent batches became durable, by their last revision (for delivery latency).
    /// Read for every response the fan-out sends: a read lock, so streams do not contend.
    durable: RwLock<VecDeque<(i64, Instant)>>,
}

/// How many recent batches `durable_at` remembers.
const DURABLE_HISTORY: usize = 4096;

/// What `/metrics` reports about watches.
pub struct WatchCounts {
    pub streams: usize,
    pub watchers: usize,
    /// Watchers catching up from history.
    pub unsynced: usize,
}

impl WatchHub {
    /// `header` is the cluster id, member id and raft term to put on every response.
    pub fn new(
        store: Arc<Store>,
        header: ResponseHeader,
        max_response_bytes: usize,
    ) -> Result<Arc<Self>, rkv_storage::StorageError> {
        let current_rev = store.current_revision()?;
        Ok(Arc::new(Self {
            store,
            max_response_bytes,
            term: std::sync::atomic::AtomicU64::new(header.raft_term),
            header,
            inner: Mutex::new(HubInner {
                current_rev,
                next_stream: 1,
                streams: HashMap::new(),
                watchers: HashMap::new(),
            }),
            prev_kv_watchers: AtomicUsize::new(0),
            durable: RwLock::new(VecDeque::with_capacity(DURABLE_HISTORY)),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> WatchCounts {
        let inner = self.lock();
        WatchCounts {
            streams: inner.streams.len(),
            watchers: inner.watchers.len(),
            unsynced: inner.watchers.values().filter(|w| !w.synced).count(),
        }
    }

    /// When the batch holding `revision` became durable, if it is recent.
    pub fn durable_at(&self, revision: i64) -> Option<Instant> {
        let durable = self.durable.read().unwrap_or_else(|e| e.into_inner());
        let i = durable.partition_point(|(last, _)| *last < revision);
        durable.get(i).map(|(_, at)| *at)
    }

    pub fn header(&self, revision: i64) -> Option<ResponseHeader> {
        let raft_term = self.term.load(Ordering::Relaxed);
        Some(ResponseHeader { revision, raft_term, ..self.header })
    }

    pub fn set_term(&self, term: u64) {
        self.term.store(term, Ordering::Relaxed);
    }

    /// After the store was replaced by a snapshot: every watcher catches up from the new
    /// history (or is told that what it needs was compacted).
    pub fn resync_all(&self, current_rev: i64) {
        let mut inner = self.lock();
        inner.current_rev = current_rev;
        let HubInner { streams, watchers, .. } = &mut *inner;
        let mut wake = Vec::new();
        for ((stream, _), w) in watchers.iter_mut() {
            if w.active && w.synced {
                w.synced = false;
                if let Some(s) = streams.get(stream) {
                    wake.push(s.syncer.clone());
                }
            }
        }
        drop(inner);
        for s in wake {
            s.notify_one();
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn current_revision(&self) -> i64 {
        self.lock().current_rev
    }

    /// How many watchers an applied batch is offered to (its notify walks them all).
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// Whether the apply layer should capture previous values in its events.
    pub fn wants_prev_kv(&self) -> bool {
        self.prev_kv_watchers.load(Ordering::Acquire) > 0
    }

    /// A new watch stream: its id, the receiving end of its responses and its syncer's bell.
    pub fn open_stream(
        &self,
    ) -> (StreamId, mpsc::Receiver<WatchResponse>, mpsc::Sender<WatchResponse>, Arc<Notify>) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let syncer = Arc::new(Notify::new());
        let mut inner = self.lock();
        let id = inner.next_stream;
        inner.next_stream += 1;
        inner.streams.insert(
            id,
            Stream { tx: tx.clone(), syncer: syncer.clone(), next_auto_id: 0, deferred_progress: false },
        );
        (id, rx, tx, syncer)
    }

    pub fn close_stream(&self, stream: StreamId) {
        let mut inner = self.lock();
        inner.streams.remove(&stream);
        let ids: Vec<_> = inner.watchers.keys().filter(|(s, _)| *s == stream).copied().collect();
        for key in ids {
            if let Some(w) = inner.watchers.remove(&key) {
                if w.spec.prev_kv {
                    self.prev_kv_watchers.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
    }

    /// Registers a watcher (inactive until `activate`). `start_rev` 0 means the next revision.
    /// Returns its id and the revision for the Created response's header.
    pub fn create(
        &self,
        stream: StreamId,
        requested_id: WatchId,
        start_rev: i64,
        spec: WatchSpec,
    ) -> Result<(WatchId, i64), CreateError> {
        let mut inner = self.lock();
        let current = inner.current_rev;
        if spec.end.as_ref().is_some_and(|end| !end.is_empty() && spec.key.as_slice() >= end.as_slice()) {
            return Err(CreateError::EmptyRange);
        }
        let id = if requested_id != 0 {
            if inner.watchers.contains_key(&(stream, requested_id)) {
                return Err(CreateError::DuplicateId);
            }
            requested_id
        } else {
            let mut id = inner.streams.get(&stream).map_or(0, |s| s.next_auto_id);
            while inner.watchers.contains_key(&(stream, id)) {
                id += 1;
            }
            if let Some(s) = inner.streams.get_mut(&stream) {
                s.next_auto_id = id + 1;
            }
            id
        };
        if spec.prev_kv {
            self.prev_kv_watchers.fetch_add(1, Ordering::AcqRel);
        }
        let next_rev = if start_rev == 0 { current + 1 } else { start_rev };
        inner.watchers.insert(
            (stream, id),
            Watcher { spec, active: false, synced: false, next_rev, sent_since_progress: false },
        );
        Ok((id, current))
    }

    /// Starts delivering to a watcher whose Created response has been queued.
    pub fn activate(&self, stream: StreamId, id: WatchId) {
        let mut inner = self.lock();
        let current = inner.current_rev;
        let Some(w) = inner.watchers.get_mut(&(stream, id)) else { return };
        w.active = true;
        if w.next_rev > current {
            w.synced = true;
        } else if let Some(s) = inner.streams.get(&stream) {
            s.syncer.notify_one();
        }
    }

    /// Removes a watcher; false if the stream has no such watcher.
    pub fn cancel(&self, stream: StreamId, id: WatchId) -> bool {
        let mut inner = self.lock();
        match inner.watchers.remove(&(stream, id)) {
            Some(w) => {
                if w.spec.prev_kv {
                    self.prev_kv_watchers.fetch_sub(1, Ordering::AcqRel);
                }
                true
            }
            None => false,
        }
    }

    /// A WatchProgressRequest: the current revision if every watcher of the stream is synced
    /// (then every event up to it has been queued); otherwise the answer is deferred until the
    /// stream's syncer has caught up. A stream without watchers gets no answer, as in etcd.
    pub fn request_progress(&self, stream: StreamId) -> Option<i64> {
        let mut inner = self.lock();
        let current = inner.current_rev;
        let mut any = false;
        let mut all_synced = true;
        for ((s, _), w) in inner.watchers.iter() {
            if *s == stream {
                any = true;
                all_synced &= w.active && w.synced;
            }
        }
        if !any {
            return None;
        }
        if all_synced {
            return Some(current);
        }
        if let Some(s) = inner.streams.get_mut(&stream) {
            s.deferred_progress = true;
        }
        None
    }

    /// Periodic progress notification: the watchers of `stream` that asked for it, are synced
    /// and were sent no event since the last tick; and the revision to report.
    pub fn progress_tick(&self, stream: StreamId) -> (Vec<WatchId>, i64) {
        let mut inner = self.lock();
        let current = inner.current_rev;
        let mut ids = Vec::new();
        for ((s, id), w) in inner.watchers.iter_mut() {
            if *s != stream || !w.spec.progress_notify {
                continue;
            }
            if w.active && w.synced && !w.sent_since_progress {
                ids.push(*id);
            }
            w.sent_since_progress = false;
        }
        (ids, current)
    }

    /// Called by the apply path after a batch is committed: pushes its events to synced
    /// watchers without ever waiting. `captured_prev` says whether events carry prev_kv.
    pub fn notify(&self, current_rev: i64, events: &[Event], captured_prev: bool) {
        let mut inner = self.lock();
        let first_rev = inner.current_rev + 1;
        inner.current_rev = current_rev;
        if events.is_empty() {
            return;
        }
        {
            let mut durable = self.durable.write().unwrap_or_else(|e| e.into_inner());
            if durable.len() == DURABLE_HISTORY {
                durable.pop_front();
            }
            durable.push_back((current_rev, Instant::now()));
        }
        let HubInner { streams, watchers, .. } = &mut *inner;
        let mut closed = Vec::new();
        let mut wake = Vec::new();
        for ((stream, id), w) in watchers.iter_mut() {
            if !w.active || !w.synced {
                continue;
            }
            let Some(s) = streams.get(stream) else { continue };
            if w.spec.prev_kv && !captured_prev {
                // This batch was applied before the watcher asked for prev_kv: catch it up
                // from history, where prev_kv is read.
                w.synced = false;
                w.next_rev = w.next_rev.max(first_rev);
                wake.push(s.syncer.clone());
                continue;
            }
            let evs = w.spec.select(events, w.next_rev);
            if evs.is_empty() {
                continue;
            }
            let resp = WatchResponse {
                header: self.header(current_rev),
                watch_id: *id,
                events: evs,
                ..Default::default()
            };
            if w.spec.fragment && prost::Message::encoded_len(&resp) > self.max_response_bytes {
                // Fragments must go out together: the syncer sends them, waiting for room.
                w.synced = false;
                w.next_rev = w.next_rev.max(first_rev);
                wake.push(s.syncer.clone());
                continue;
            }
            match s.tx.try_send(resp) {
                Ok(()) => {
                    w.next_rev = current_rev + 1;
                    w.sent_since_progress = true;
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    debug!(stream, watch_id = id, "watch stream full; the watcher catches up from history");
                    w.synced = false;
                    w.next_rev = w.next_rev.max(first_rev);
                    wake.push(s.syncer.clone());
                }
                Err(mpsc::error::TrySendError::Closed(_)) => closed.push(*stream),
            }
        }
        for s in wake {
            s.notify_one();
        }
        drop(inner);
        for stream in closed {
            self.close_stream(stream);
        }
    }
}
