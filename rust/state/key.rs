//! The key shared stores file a customer id or a jti under: 127 bits of its SHA-256, the low
//! bit of the first word set so that a key is never the zero of an empty slot.
//!
//! A verified token keeps its customer's and its jti's keys, so a cached token is hashed once,
//! not once per request.

use std::fmt;

/// A customer id's or a jti's key in the zone and in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StateKey {
    hi: u64,
    lo: u64,
}

impl StateKey {
    /// The key of `text`.
    pub fn of(text: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let bytes = digest.as_ref();
        StateKey {
            hi: u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")) | 1,
            lo: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
        }
    }

    /// The two words the zone stores.
    pub fn words(self) -> (u64, u64) {
        (self.hi, self.lo)
    }
}

/// 32 hexadecimal digits, as Redis key names carry it.
impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.hi, self.lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_distinct_and_never_zero() {
        assert_eq!(StateKey::of("alice"), StateKey::of("alice"));
        assert_ne!(StateKey::of("alice"), StateKey::of("bob"));
        assert_eq!(StateKey::of("").words().0 & 1, 1);
        assert_eq!(StateKey::of("alice").to_string().len(), 32);
    }
}
