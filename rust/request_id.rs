//! Request ids: unique per process run, cheap to make, unguessable across restarts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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

    /// The next id; its text is written the first time it is asked for.
    #[inline]
    pub fn next(&self) -> RequestId {
        RequestId {
            prefix: self.prefix,
            n: self.counter.fetch_add(1, Ordering::Relaxed),
            text: OnceLock::new(),
        }
    }
}

/// One request's id: 32 hex digits, formatted only when needed.
#[derive(Debug)]
pub struct RequestId {
    prefix: u64,
    n: u64,
    text: OnceLock<String>,
}

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        self.text.get_or_init(|| {
            let mut id = [0u8; 32];
            hex16(self.prefix, &mut id[..16]);
            hex16(self.n, &mut id[16..]);
            // Only ASCII hex digits were written.
            String::from_utf8_lossy(&id).into_owned()
        })
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
        let (a, b) = (ids.next(), ids.next());
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            a.as_str(),
            a.as_str(),
            "formatted once, the same every time"
        );
    }
}
