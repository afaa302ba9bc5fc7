//! The nonces of accepted signatures, remembered until their signature could no longer be
//! accepted anyway, so that a signature is accepted once (RFC 9421 section 7.2.2).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Expired entries dropped on every call, so memory follows the live nonces without a sweep.
const PRUNE_PER_CALL: usize = 2;

/// Seen nonces, each until its signature's last acceptable second; bounded by a capacity.
/// When full even after dropping the expired, the entry closest to expiring is evicted (and
/// counted): a bounded store cannot refuse new signatures without refusing every signer.
pub struct NonceStore {
    capacity: usize,
    inner: Mutex<Inner>,
    evicted: AtomicU64,
}

#[derive(Default)]
struct Inner {
    until_s: HashMap<Arc<str>, u64>,
    /// Every recorded `(until_s, nonce)`, soonest first; entries re-recorded later are stale.
    by_expiry: BinaryHeap<Reverse<(u64, Arc<str>)>>,
}

impl Inner {
    /// Drops the soonest-expiring entry if `expired_before_s` is past it; says whether one was.
    fn pop_soonest(&mut self, expired_before_s: Option<u64>) -> bool {
        let Some(Reverse((until_s, _))) = self.by_expiry.peek() else {
            return false;
        };
        if expired_before_s.is_some_and(|now_s| *until_s >= now_s) {
            return false;
        }
        if let Some(Reverse((until_s, nonce))) = self.by_expiry.pop() {
            // A heap entry whose nonce was recorded again later no longer owns the map entry.
            if self.until_s.get(&nonce) == Some(&until_s) {
                self.until_s.remove(&nonce);
            }
        }
        true
    }
}

impl NonceStore {
    /// A store remembering at most `capacity` nonces (at least one).
    pub fn new(capacity: usize) -> Self {
        NonceStore {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
            evicted: AtomicU64::new(0),
        }
    }

    /// Records `nonce` as used until `until_s`; false when it is already recorded and not yet
    /// expired at `now_s` (a replay).
    pub fn check_and_record(&self, nonce: &str, until_s: u64, now_s: u64) -> bool {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            // A panic elsewhere cannot leave the map half-written; keep serving.
            Err(poisoned) => poisoned.into_inner(),
        };
        for _ in 0..PRUNE_PER_CALL {
            if !inner.pop_soonest(Some(now_s)) {
                break;
            }
        }
        if inner.until_s.get(nonce).is_some_and(|&seen| seen >= now_s) {
            return false;
        }
        if !inner.until_s.contains_key(nonce) && inner.until_s.len() >= self.capacity {
            while inner.until_s.len() >= self.capacity && inner.pop_soonest(Some(now_s)) {}
            while inner.until_s.len() >= self.capacity && inner.pop_soonest(None) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let nonce: Arc<str> = Arc::from(nonce);
        inner.until_s.insert(nonce.clone(), until_s);
        inner.by_expiry.push(Reverse((until_s, nonce)));
        true
    }

    /// How many nonces are remembered now.
    pub fn len(&self) -> usize {
        match self.inner.lock() {
            Ok(inner) => inner.until_s.len(),
            Err(poisoned) => poisoned.into_inner().until_s.len(),
        }
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many unexpired nonces were forgotten because the store was full.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// The most nonces remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_accepted_once_until_it_expires() {
        let store = NonceStore::new(10);
        assert!(store.check_and_record("a", 100, 50));
        assert!(!store.check_and_record("a", 100, 60));
        assert!(!store.check_and_record("a", 100, 100));
        assert!(store.check_and_record("b", 100, 60));
        // Past its signature's lifetime the nonce is forgotten: the signature is stale anyway.
        assert!(store.check_and_record("a", 200, 101));
        assert!(!store.check_and_record("a", 200, 150));
    }

    #[test]
    fn expired_entries_are_pruned_as_calls_come() {
        let store = NonceStore::new(100);
        for i in 0..20 {
            assert!(store.check_and_record(&format!("n{i}"), 10, 0));
        }
        assert_eq!(store.len(), 20);
        for i in 0..20 {
            assert!(store.check_and_record(&format!("m{i}"), 100, 50));
        }
        assert_eq!(store.len(), 20);
        assert_eq!(store.evicted(), 0);
    }

    #[test]
    fn when_full_expired_go_first_then_the_soonest_is_evicted() {
        let store = NonceStore::new(3);
        assert!(store.check_and_record("old", 10, 0));
        assert!(store.check_and_record("x", 100, 0));
        assert!(store.check_and_record("y", 200, 0));
        // "old" expired: it makes room without an eviction (pruned on entry).
        assert!(store.check_and_record("z", 300, 20));
        assert_eq!(store.evicted(), 0);
        assert_eq!(store.len(), 3);
        // Full of live nonces: the one closest to expiring ("x") goes, and is counted.
        assert!(store.check_and_record("w", 400, 20));
        assert_eq!(store.evicted(), 1);
        assert_eq!(store.len(), 3);
        // The cost of eviction: "x" is no longer known (and "y" goes to make room for it).
        assert!(store.check_and_record("x", 100, 21));
        assert_eq!(store.evicted(), 2);
        assert!(!store.check_and_record("z", 300, 21));
        assert!(!store.check_and_record("w", 400, 21));
    }

    #[test]
    fn a_re_recorded_nonce_keeps_its_new_expiry() {
        let store = NonceStore::new(10);
        assert!(store.check_and_record("a", 10, 0));
        assert!(store.check_and_record("a", 100, 11));
        // The stale heap entry (until 10) must not remove the live one.
        assert!(store.check_and_record("b", 100, 12));
        assert!(store.check_and_record("c", 100, 13));
        assert!(!store.check_and_record("a", 100, 14));
    }

    #[test]
    fn capacity_is_at_least_one() {
        let store = NonceStore::new(0);
        assert_eq!(store.capacity(), 1);
        assert!(store.check_and_record("a", 10, 0));
        assert!(store.check_and_record("b", 10, 0));
        assert_eq!(store.len(), 1);
        assert!(!store.is_empty());
    }
}
