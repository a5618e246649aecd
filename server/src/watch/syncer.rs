//! A stream's syncer: catches its unsynced watchers up from the MVCC history (etcd's
//! `syncWatchers`), then hands them back to the hub as synced. It is the only place that waits
//! on a slow client, and it waits only for its own stream.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rkv_proto::etcdserverpb::WatchResponse;
use rkv_proto::mvccpb::{event::EventType, Event, KeyValue};
use rkv_storage::{KeyRange, RangeOptions, StorageError};
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use super::{StreamId, WatchHub, WatchId, WatchSpec, PROGRESS_WATCH_ID};

/// Revisions read from history per step (etcd's `watchBatchMaxRevs`).
const MAX_REVS_PER_STEP: i64 = 1000;

impl WatchHub {
    /// Active unsynced watchers of `stream` and the current revision.
    fn unsynced(&self, stream: StreamId) -> (Vec<(WatchId, WatchSpec, i64)>, i64) {
        let inner = self.lock();
        let work = inner
            .watchers
            .iter()
            .filter(|((s, _), w)| *s == stream && w.active && !w.synced)
            .map(|((_, id), w)| (*id, w.spec.clone(), w.next_rev))
            .collect();
        (work, inner.current_rev)
    }

    /// Records that a watcher was sent everything up to `upto`; synced if that is the present.
    fn advance(&self, stream: StreamId, id: WatchId, upto: i64, sent: bool) {
        let mut inner = self.lock();
        let current = inner.current_rev;
        if let Some(w) = inner.watchers.get_mut(&(stream, id)) {
            w.next_rev = w.next_rev.max(upto + 1);
            w.sent_since_progress |= sent;
            if upto >= current {
                w.synced = true;
            }
        }
    }

    /// A deferred progress request whose stream is now fully synced: the revision to report.
    fn take_deferred_progress(&self, stream: StreamId) -> Option<i64> {
        let mut inner = self.lock();
        let current = inner.current_rev;
        let all_synced =
            inner.watchers.iter().filter(|((s, _), _)| *s == stream).all(|(_, w)| w.active && w.synced);
        let s = inner.streams.get_mut(&stream)?;
        if s.deferred_progress && all_synced {
            s.deferred_progress = false;
            return Some(current);
        }
        None
    }

    /// The events of `[from, to]` for each of `members` (watchers at the same position), read
    /// from history once for all of them, with prev_kv for those that asked (each previous
    /// value read once).
    fn history(
        &self,
        members: &[(WatchId, WatchSpec)],
        from: i64,
        to: i64,
    ) -> Result<Vec<Vec<Event>>, StorageError> {
        let store = self.store();
        let changes: Vec<Event> = store
            .changes_between(from, to)?
            .into_iter()
            .map(|(_, kv, tombstone)| Event {
                r#type: if tombstone { EventType::Delete as i32 } else { EventType::Put as i32 },
                kv: Some(kv),
                prev_kv: None,
            })
            .collect();
        let mut prev_cache: HashMap<(Vec<u8>, i64), Option<KeyValue>> = HashMap::new();
        let mut out = Vec::with_capacity(members.len());
        for (_, spec) in members {
            let mut events = Vec::new();
            for ev in changes.iter().filter(|ev| spec.wants(ev)) {
                let mut ev = ev.clone();
                if spec.prev_kv {
                    ev.prev_kv = previous(store, &ev, &mut prev_cache)?;
                }
                events.push(ev);
            }
            out.push(events);
        }
        Ok(out)
    }
}

/// The key's value before the event (etcd reads it at revision - 1; a created key has none, and a
/// compacted previous version leaves it empty, as in etcd). Any other read error fails the
/// history read: an event without the prev_kv it asked for would look like a creation.
fn previous(
    store: &rkv_storage::Store,
    ev: &Event,
    cache: &mut HashMap<(Vec<u8>, i64), Option<KeyValue>>,
) -> Result<Option<KeyValue>, StorageError> {
    let Some(kv) = ev.kv.as_ref() else { return Ok(None) };
    if ev.r#type == EventType::Put as i32 && kv.version == 1 {
        return Ok(None);
    }
    let cache_key = (kv.key.clone(), kv.mod_revision);
    if let Some(prev) = cache.get(&cache_key) {
        return Ok(prev.clone());
    }
    let opts = RangeOptions { rev: kv.mod_revision - 1, ..Default::default() };
    let prev = match store.range(KeyRange::Single(&kv.key), opts) {
        Ok(r) => r.kvs.into_iter().next(),
        Err(StorageError::Compacted) => None,
        Err(e) => return Err(e),
    };
    cache.insert(cache_key, prev.clone());
    Ok(prev)
}

/// Splits a response whose watcher asked for fragments into pieces of at most `max_bytes`
/// (every piece but the last has `fragment` set); others go out whole.
pub fn fragments(resp: WatchResponse, fragment: bool, max_bytes: usize) -> Vec<WatchResponse> {
    use prost::Message;
    if !fragment || resp.encoded_len() <= max_bytes || resp.events.len() <= 1 {
        return vec![resp];
    }
    let mut out = Vec::new();
    let mut resp = resp;
    let events = std::mem::take(&mut resp.events);
    let mut current = resp.clone();
    let mut size = 0;
    for ev in events {
        let len = ev.encoded_len();
        if !current.events.is_empty() && size + len > max_bytes {
            let mut full = std::mem::replace(&mut current, resp.clone());
            full.fragment = true;
            out.push(full);
            size = 0;
        }
        size += len;
        current.events.push(ev);
    }
    current.fragment = false;
    out.push(current);
    out
}

pub async fn run_syncer(
    hub: Arc<WatchHub>,
    stream: StreamId,
    tx: mpsc::Sender<WatchResponse>,
    bell: Arc<Notify>,
    max_bytes: usize,
) {
    loop {
        bell.notified().await;
        loop {
            let (work, current) = hub.unsynced(stream);
            if work.is_empty() {
                if let Some(rev) = hub.take_deferred_progress(stream) {
                    let resp = WatchResponse {
                        header: hub.header(rev),
                        watch_id: PROGRESS_WATCH_ID,
                        ..Default::default()
                    };
                    if tx.send(resp).await.is_err() {
                        return;
                    }
                }
                break;
            }
            // Watchers that fell behind together share one read of the history.
            let mut groups: BTreeMap<i64, Vec<(WatchId, WatchSpec)>> = BTreeMap::new();
            for (id, spec, next_rev) in work {
                groups.entry(next_rev).or_default().push((id, spec));
            }
            for (next_rev, members) in groups {
                let to = current.min(next_rev + MAX_REVS_PER_STEP - 1);
                let (hub2, members2) = (hub.clone(), members.clone());
                let read = tokio::task::spawn_blocking(move || hub2.history(&members2, next_rev, to)).await;
                let per_watcher = match read {
                    Ok(Ok(per_watcher)) => per_watcher,
                    Ok(Err(StorageError::Compacted)) => {
                        let compact_revision = match hub.store().compacted_revision() {
                            Ok(rev) => rev,
                            Err(e) => {
                                warn!(error = %e, stream, "cannot read the compacted revision");
                                return;
                            }
                        };
                        for (id, _) in &members {
                            hub.cancel(stream, *id);
                            let resp = WatchResponse {
                                header: hub.header(0),
                                watch_id: *id,
                                canceled: true,
                                compact_revision,
                                ..Default::default()
                            };
                            if tx.send(resp).await.is_err() {
                                return;
                            }
                        }
                        continue;
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, stream, "cannot read watch history");
                        return;
                    }
                    Err(e) => {
                        warn!(error = %e, stream, "watch history read did not finish");
                        return;
                    }
                };
                for ((id, spec), events) in members.into_iter().zip(per_watcher) {
                    let sent = !events.is_empty();
                    if sent {
                        let resp = WatchResponse {
                            header: hub.header(current),
                            watch_id: id,
                            events,
                            ..Default::default()
                        };
                        for piece in fragments(resp, spec.fragment, max_bytes) {
                            if tx.send(piece).await.is_err() {
                                return;
                            }
                        }
                    }
                    hub.advance(stream, id, to, sent);
                }
            }
        }
    }
}
