//! Request ids: unique per process run, cheap to make, unguessable across restarts.

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
        let mut id = [0u8; 32];
        hex16(self.prefix, &mut id[..16]);
        hex16(n, &mut id[16..]);
        // Only ASCII hex digits were written.
        String::from_utf8_lossy(&id).into_owned()
    }
}

/// Writes `value` as 16 lower-case hex digits, most significant first.
#[inline]
fn hex16(value: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, byte) in out.iter_mut().enumerate().take(16) {
        *byte = DIGITS[((value >> (60 - 4 * i)) & 0xf) as usize];
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
