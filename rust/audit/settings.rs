//! `[audit]` as the control plane compiles it.

use serde::Deserialize;

/// When a record is durable relative to the answer it describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// The answer leaves only once its record is on disk (group commit: one fsync for many).
    Strict,
    /// Records are queued and on disk within `flush_interval_ms`.
    Buffered,
}

/// What the gateway does when the trail cannot take a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// 503 audit_unavailable instead of serving unaudited.
    FailClosed,
    /// Serve anyway; every record lost is counted and reported in the next digest.
    FailOpen,
}

/// How a personal field (client address, user agent) is kept in records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    Keep,
    /// HMAC-SHA-256 under the configured key: equal values stay comparable, the value does not show.
    Hash,
    Drop,
}

/// The compiled `[audit]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// The trail's directory (absolute: the control plane resolves it).
    pub directory: String,
    pub durability: Durability,
    pub on_failure: OnFailure,
    /// Records accepted and not yet on disk, at most.
    pub queue_records: usize,
    /// Buffered: the longest a record waits for its fsync.
    pub flush_interval_ms: u64,
    pub rotate_bytes: u64,
    pub rotate_hourly: bool,
    pub digest_every_records: u64,
    pub digest_every_s: u64,
    /// Closed segments older than this are removed (none: kept).
    #[serde(default)]
    pub retention_s: Option<u64>,
    /// Closed segments are removed, oldest first, while the chain's segments exceed this.
    #[serde(default)]
    pub retention_bytes: Option<u64>,
    pub client_address: Keep,
    pub user_agent: Keep,
    /// The HMAC key of hashed fields, base64 (standard); required when one is hashed.
    #[serde(default)]
    pub hash_key_b64: Option<String>,
    /// The digests' Ed25519 signing key: PKCS#8 DER, base64 (standard).
    pub signing_key_b64: String,
}
