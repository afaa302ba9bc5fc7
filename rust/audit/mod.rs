//! The audit trail: one record per request and per admin action, hash-chained per worker into
//! JSON Lines segments, covered by signed digests (`python/cellgate/audit/FORMAT.md`), written
//! on a thread of its own.

pub mod digest;
pub mod draft;
pub mod privacy;
pub mod record;
pub mod recovery;
pub mod segment;
pub mod settings;
pub mod time;
pub mod trail;
pub mod writer;

pub use draft::Draft;
pub use record::{AdminRecord, Event, Names, Record, RecordOutcome, RequestRecord};
pub use settings::AuditSettings;
pub use trail::{Ticket, Trail, Unavailable};

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    hex_into(&mut out, bytes);
    out
}

/// Appends `bytes` as lowercase hex.
pub fn hex_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)] as char);
        out.push(DIGITS[usize::from(byte & 15)] as char);
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
