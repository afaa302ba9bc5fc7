//! Request ids: unique per process run, cheap to make, unguessable across restarts.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes 32-hex-digit request ids from a random per-process prefix and a counter.
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub fn new() -> Self {
        let mut bytes = [0u8; 16];
        let rng = ring::rand::SystemRandom::new();
        // A failing system RNG leaves zeroes: ids stay unique within the process either way.
        let _ = ring::rand::SecureRandom::fill(&rng, &mut bytes);
        let (prefix, start) = bytes.split_at(8);
        RequestIds {
            prefix: u64::from_le_bytes(prefix.try_into().unwrap_or_default()),
            counter: AtomicU64::new(u64::from_le_bytes(start.try_into().unwrap_or_default())),
        }
    }

    /// The next id.
    #[inline]
    pub fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(32);
        let _ = write!(id, "{:016x}{:016x}", self.prefix, n);
        id
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_32_hex_digits() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
