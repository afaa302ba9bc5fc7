//! A bounded cache of verified tokens; an entry never outlives its token's expiry.

use foldhash::fast::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use super::Verified;

const SHARDS: usize = 16;

struct Shard {
    entries: HashMap<Box<str>, Arc<Verified>, RandomState>,
}

/// Verified tokens by their compact serialization, sharded to keep lock hold times short.
pub struct TokenCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard_capacity: usize,
    hasher: RandomState,
}

impl TokenCache {
    /// A cache holding at most about `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> Self {
        let per_shard_capacity = capacity.div_ceil(SHARDS);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    entries: HashMap::with_hasher(RandomState::default()),
                })
            })
            .collect();
        TokenCache {
            shards,
            per_shard_capacity,
            hasher: RandomState::default(),
        }
    }

    fn shard(&self, token: &str) -> &Mutex<Shard> {
        let index = self.hasher.hash_one(token) as usize % SHARDS;
        &self.shards[index]
    }

    /// The cached verification of `token`, if it is still valid at `now_s`.
    pub fn get(&self, token: &str, now_s: u64) -> Option<Arc<Verified>> {
        if self.per_shard_capacity == 0 {
            return None;
        }
        let mut shard = self.shard(token).lock().ok()?;
        let verified = shard.entries.get(token)?;
        if now_s < verified.cache_until_s {
            return Some(verified.clone());
        }
        shard.entries.remove(token);
        None
    }

    /// Remembers a verified token until `verified.cache_until_s`.
    pub fn insert(&self, token: &str, verified: Arc<Verified>, now_s: u64) {
        if self.per_shard_capacity == 0 || verified.cache_until_s <= now_s {
            return;
        }
        let Ok(mut shard) = self.shard(token).lock() else {
            return;
        };
        if shard.entries.len() >= self.per_shard_capacity {
            shard.entries.retain(|_, v| v.cache_until_s > now_s);
        }
        if shard.entries.len() >= self.per_shard_capacity {
            // Full of live tokens: drop an arbitrary one, an O(1) eviction with no bookkeeping.
            if let Some(victim) = shard.entries.keys().next().cloned() {
                shard.entries.remove(&victim);
            }
        }
        shard.entries.insert(token.into(), verified);
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|s| s.entries.len()).unwrap_or(0))
            .sum()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every cached token.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            if let Ok(mut shard) = shard.lock() {
                shard.entries.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(until: u64) -> Arc<Verified> {
        Arc::new(Verified {
            customer: "c-1".into(),
            customer_key: crate::state::StateKey::of("c-1"),
            cache_until_s: until,
            jti: None,
            jti_key: None,
            issued_at_s: None,
            step_up: Default::default(),
        })
    }

    #[test]
    fn entry_expires_with_its_token() {
        let cache = TokenCache::new(100);
        cache.insert("t", verified(100), 50);
        assert!(cache.get("t", 99).is_some());
        assert!(cache.get("t", 100).is_none());
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::new(32);
        for i in 0..1000 {
            cache.insert(&format!("token-{i}"), verified(1000), 1);
        }
        assert!(cache.len() <= 32);
    }

    #[test]
    fn zero_capacity_caches_nothing() {
        let cache = TokenCache::new(0);
        cache.insert("t", verified(100), 1);
        assert!(cache.get("t", 2).is_none());
    }
}
