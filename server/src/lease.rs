//! `Lessor`: leases, their deadlines and the keys attached to them (etcd's `lease/lessor.go`).
//!
//! Grants and revocations are applied in order with the writes (they are commands, so that a
//! replicated log can carry them); attachments follow the put and delete events of each applied
//! command. Keep-alives only move a deadline in memory: after a restart every lease gets its
//! full TTL again, as etcd renews leases when a member becomes leader.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rkv_proto::mvccpb::{event::EventType, Event};

/// etcd's `MaxLeaseTTL` (in seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's minimum TTL with its default election timeout (1s) and heartbeat (100ms):
/// ceil(1.5 * election ticks * heartbeat) = 2 seconds.
pub const MIN_LEASE_TTL: i64 = 2;

/// Whether a lease exists; the lessor answers it (no lease exists until the lease service
/// grants one). A trait so that the apply layer's checks can be tested without a lessor.
pub trait LeaseLookup {
    fn lease_exists(&self, id: i64) -> bool;
}

#[derive(Debug)]
struct Lease {
    ttl: i64,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Inner {
    leases: HashMap<i64, Lease>,
    /// Which lease each leased key is attached to.
    items: HashMap<Vec<u8>, i64>,
}

#[derive(Debug, Default)]
pub struct Lessor {
    inner: Mutex<Inner>,
}

/// What LeaseTimeToLive reports.
pub struct TimeToLive {
    pub remaining: i64,
    pub granted: i64,
    pub keys: Vec<Vec<u8>>,
}

impl Lessor {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces every lease with those of a store just installed from a snapshot.
    pub fn reset(&self, leases: Vec<(i64, i64)>, keys: Vec<(Vec<u8>, i64)>) {
        let fresh = Lessor::restore(leases, keys);
        let inner = std::mem::take(&mut *fresh.lock());
        *self.lock() = inner;
    }

    /// Gives every lease its full TTL from now: a new leader does not know how much of it
    /// passed under the old one (etcd's `Promote`).
    pub fn promote(&self) {
        let now = Instant::now();
        for lease in self.lock().leases.values_mut() {
            lease.deadline = deadline(now, lease.ttl);
        }
    }

    /// Rebuilds the leases of a restarted member; each gets its full TTL from now.
    pub fn restore(leases: Vec<(i64, i64)>, keys: Vec<(Vec<u8>, i64)>) -> Self {
        let now = Instant::now();
        let mut inner = Inner::default();
        for (id, ttl) in leases {
            inner.leases.insert(id, Lease { ttl, deadline: deadline(now, ttl), keys: BTreeSet::new() });
        }
        for (key, id) in keys {
            if let Some(l) = inner.leases.get_mut(&id) {
                l.keys.insert(key.clone());
                inner.items.insert(key, id);
            }
        }
        Lessor { inner: Mutex::new(inner) }
    }

    /// The TTL a grant gets: etcd raises TTLs below its minimum.
    pub fn effective_ttl(ttl: i64) -> i64 {
        ttl.max(MIN_LEASE_TTL)
    }

    pub fn grant(&self, id: i64, ttl: i64) {
        let lease = Lease { ttl, deadline: deadline(Instant::now(), ttl), keys: BTreeSet::new() };
        self.lock().leases.insert(id, lease);
    }

    /// Removes a lease (its keys have been deleted by the same command).
    pub fn revoke(&self, id: i64) {
        let mut inner = self.lock();
        if let Some(l) = inner.leases.remove(&id) {
            for key in l.keys {
                if inner.items.get(&key) == Some(&id) {
                    inner.items.remove(&key);
                }
            }
        }
    }

    /// The keys attached to a lease, in key order.
    pub fn keys(&self, id: i64) -> Vec<Vec<u8>> {
        self.lock().leases.get(&id).map(|l| l.keys.iter().cloned().collect()).unwrap_or_default()
    }

    /// Follows the attachments through applied put and delete events.
    pub fn track(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for ev in events {
            let Some(kv) = &ev.kv else { continue };
            let new = if ev.r#type == EventType::Put as i32 { kv.lease } else { 0 };
            let old = inner.items.get(&kv.key).copied().unwrap_or(0);
            if old == new {
                continue;
            }
            if old != 0 {
                if let Some(l) = inner.leases.get_mut(&old) {
                    l.keys.remove(&kv.key);
                }
                inner.items.remove(&kv.key);
            }
            if new != 0 {
                if let Some(l) = inner.leases.get_mut(&new) {
                    l.keys.insert(kv.key.clone());
                    inner.items.insert(kv.key.clone(), new);
                }
            }
        }
    }

    /// A keep-alive: the lease's TTL, or None if it does not exist or has expired.
    pub fn renew(&self, id: i64) -> Option<i64> {
        let now = Instant::now();
        let mut inner = self.lock();
        let l = inner.leases.get_mut(&id)?;
        if l.deadline <= now {
            return None;
        }
        l.deadline = deadline(now, l.ttl);
        Some(l.ttl)
    }

    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<TimeToLive> {
        let now = Instant::now();
        let inner = self.lock();
        let l = inner.leases.get(&id)?;
        let remaining = l.deadline.saturating_duration_since(now).as_secs() as i64;
        let keys = if with_keys { l.keys.iter().cloned().collect() } else { Vec::new() };
        Some(TimeToLive { remaining, granted: l.ttl, keys })
    }

    pub fn list(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.lock().leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases whose deadline has passed (to be revoked through the log).
    pub fn expired(&self) -> Vec<i64> {
        let now = Instant::now();
        let mut ids: Vec<i64> =
            self.lock().leases.iter().filter(|(_, l)| l.deadline <= now).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }
}

fn deadline(now: Instant, ttl: i64) -> Instant {
    now + Duration::from_secs(ttl.clamp(0, MAX_LEASE_TTL) as u64)
}

impl LeaseLookup for Lessor {
    fn lease_exists(&self, id: i64) -> bool {
        self.lock().leases.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rkv_proto::mvccpb::KeyValue;

    fn ev(key: &str, lease: i64, put: bool) -> Event {
        Event {
            r#type: if put { EventType::Put as i32 } else { EventType::Delete as i32 },
            kv: Some(KeyValue { key: key.into(), lease, ..Default::default() }),
            prev_kv: None,
        }
    }

    #[test]
    fn attachments_follow_puts_and_deletes() {
        let l = Lessor::default();
        l.grant(1, 10);
        l.grant(2, 10);
        l.track(&[ev("a", 1, true), ev("b", 1, true)]);
        assert_eq!(l.keys(1), vec![b"a".to_vec(), b"b".to_vec()]);
        l.track(&[ev("a", 2, true), ev("b", 0, false)]);
        assert_eq!(l.keys(1), Vec::<Vec<u8>>::new());
        assert_eq!(l.keys(2), vec![b"a".to_vec()]);
        l.track(&[ev("a", 0, true)]);
        assert!(l.keys(2).is_empty());
        assert!(l.renew(2).is_some() && l.renew(3).is_none());
    }
}
