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
    /// Risk scoring; none: every request scores its profile's base risk.
    #[serde(default)]
    pub risk: Option<crate::risk::RiskSettings>,
    /// Compliance rules by profile flag, applied as a hard filter on cells.
    #[serde(default)]
    pub compliance: BTreeMap<String, RequirementSettings>,
    /// The breaker of every cell that does not set its own.
    #[serde(default)]
    pub breaker: crate::breaker::BreakerSettings,
    /// How request paths are made canonical before any rule runs.
    #[serde(default)]
    pub paths: crate::target::PathSettings,
    /// The audit trail; none: nothing is recorded.
    #[serde(default)]
    pub audit: Option<crate::audit::AuditSettings>,
    /// Where shared state lives: this worker, or the node's zone.
    #[serde(default)]
    pub state: crate::state::StateSettings,
}

/// What a cell must offer to serve a customer whose profile carries the flag: a certification it
/// lists, the region it is in, and an encryption level at least as strong.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequirementSettings {
    #[serde(default)]
    pub certification: Option<String>,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub encryption: Option<String>,
}

/// How bearer tokens are verified.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSettings {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// The media type every token's JOSE header must give as `typ` (RFC 8725 section 3.11), e.g.
    /// `at+jwt` (RFC 9068); none: `typ` is not checked.
    #[serde(default)]
    pub typ: Option<String>,
    pub leeway_s: u64,
    pub customer_claim: String,
    pub require_exp: bool,
    pub cache_size: usize,
    /// How long a verified token without `exp` may stay cached.
    pub cache_ttl_s: u64,
    /// What proves step-up authentication (none configured: nothing can prove it).
    #[serde(default)]
    pub step_up: StepUpSettings,
    pub keys: Vec<KeySettings>,
}

/// What counts as proof of step-up authentication; every part given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUpSettings {
    /// An `amr` value the token must list (RFC 8176, e.g. `mfa`).
    #[serde(default)]
    pub amr: Option<String>,
    /// `acr` values, any one of which is enough.
    #[serde(default)]
    pub acr: Vec<String>,
    /// How recent `auth_time` must be, in seconds.
    #[serde(default)]
    pub max_age_s: Option<u64>,
}

/// One verification key, found by `kid`, bound to one algorithm. Exactly one of the key forms is
/// given: a secret for HS*, a public key (DER SubjectPublicKeyInfo or JWK) for the others.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub kid: String,
    pub alg: String,
    /// The shared secret of an HS* key, base64url without padding.
    #[serde(default)]
    pub secret_b64: Option<String>,
    /// A public key as DER SubjectPublicKeyInfo (a PEM "PUBLIC KEY" without its armour),
    /// base64url without padding.
    #[serde(default)]
    pub spki_b64: Option<String>,
    /// A public key as a JWK (RFC 7517).
    #[serde(default)]
    pub jwk: Option<JwkSettings>,
}

/// The public members of a JWK (RFC 7518 section 6, RFC 8037 for OKP); values base64url.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct JwkSettings {
    pub kty: String,
    #[serde(default)]
    pub n: Option<String>,
    #[serde(default)]
    pub e: Option<String>,
    #[serde(default)]
    pub crv: Option<String>,
    #[serde(default)]
    pub x: Option<String>,
    #[serde(default)]
    pub y: Option<String>,
}

/// Per-tier policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSettings {
    pub placement: String,
    /// The per-customer quota of this tier; none: not limited.
    #[serde(default)]
    pub rate_limit: Option<crate::ratelimit::QuotaSettings>,
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
    /// This cell's breaker, when it differs from the default.
    #[serde(default)]
    pub breaker: Option<crate::breaker::BreakerSettings>,
    /// Whether the customer's bearer token goes on to this cell (by default it does not: the
    /// cell learns what the gateway verified from the identity headers).
    #[serde(default)]
    pub forward_bearer_token: bool,
    /// The most forwards this cell takes at once (an Envoy-style concurrency limit); past it the
    /// next eligible cell takes the request, or 503 cell_saturated.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// This cell's own timeouts and idle timeout, where they differ from `[forward]`'s.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default)]
    pub request_timeout_ms: Option<u64>,
    #[serde(default)]
    pub pool_idle_timeout_ms: Option<u64>,
    /// How requests to this cell are signed (required when `signed`).
    #[serde(default)]
    pub signing: Option<crate::signing::SignerSettings>,
    /// TLS to this cell (required for an `https://` endpoint, refused for `http://`).
    #[serde(default)]
    pub tls: Option<crate::forward::tls::TlsSettings>,
}

/// What a timed-out forward counts as in the cell's breaker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutCountsAs {
    #[default]
    Failure,
    /// A slow call (its duration is the timeout): it opens the breaker only through the
    /// slow-call rate.
    Slow,
}

/// Envoy's default `max_requests` per cluster.
fn default_max_in_flight() -> u32 {
    1024
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
    /// How long the first byte of an answer may take (none: only the request timeout holds).
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    pub request_timeout_ms: u64,
    /// Whether a timed-out forward counts against the cell's breaker as a failure or only as a
    /// slow call.
    #[serde(default)]
    pub timeout_counts_as: TimeoutCountsAs,
    pub pool_idle_timeout_ms: u64,
    pub pool_max_idle_per_cell: usize,
    pub max_response_bytes: usize,
    /// The proxies (CIDRs) whose forwarded header names the client; none by default.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// The header a trusted proxy names the client in.
    #[serde(default)]
    pub forwarded_header: crate::client_address::ForwardedHeader,
    /// How failed forwards are retried on the next eligible cell.
    #[serde(default)]
    pub retry: crate::forward::retry::RetrySettings,
}
