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

use std::fmt::Write as _;

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
