//! The compiled configuration the control plane hands to the core, as serde types.
//!
//! Python validates the operator's TOML and encodes this shape as JSON; the core re-checks only
//! what it relies on for safety and never holds business constants of its own.

use serde::Deserialize;
use std::collections::BTreeMap;

/// Everything the core needs to decide and forward.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreSettings {
    pub jwt: JwtSettings,
    pub tiers: BTreeMap<String, TierSettings>,
    pub cells: Vec<CellSettings>,
    pub health: HealthSettings,
    pub forward: ForwardSettings,
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_s: u64,
    pub customer_claim: String,
    pub require_exp: bool,
    pub cache_size: usize,
    /// How long a verified token without `exp` may stay cached.
    pub cache_ttl_s: u64,
    pub keys: Vec<KeySettings>,
}

/// One verification key, found by `kid`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub kid: String,
    pub alg: String,
    /// The shared secret for HS* keys, base64url without padding.
    pub secret_b64: String,
}

/// Per-tier policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSettings {
    pub placement: String,
}

/// One cell: where it is, what it may serve, how much it can take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CellSettings {
    pub id: String,
    pub tier: String,
    pub region: String,
    pub endpoint: String,
    pub capacity: u32,
    pub certifications: Vec<String>,
    pub encryption: String,
    pub signed: bool,
}

/// Active health checking of cells.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSettings {
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes that bring a down cell back.
    pub rise: u32,
    /// Consecutive failures that take an up cell down.
    pub fall: u32,
}

/// How requests are sent on to cells.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSettings {
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub pool_idle_timeout_ms: u64,
    pub pool_max_idle_per_cell: usize,
    pub max_response_bytes: usize,
}
