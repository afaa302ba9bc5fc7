//! The state every request reads and writes that must be one truth across workers: the
//! revocation set and each customer's GCRA state, each behind a small trait.
//!
//! Two implementations answer each trait: in-process (`auth::Revocations`,
//! `ratelimit::RateLimiter`: one worker's own) and a shared-memory zone per node (`zone`: every
//! worker of the node maps one file). `build` chooses from `[state]`; the router only sees the
//! traits. Each cell's in-flight count and health are behind `LoadStore` (`load`, `zone_load`).

mod load;
mod zone;
mod zone_load;
mod zone_quotas;
mod zone_revocations;

#[cfg(test)]
mod suite;

use crate::auth::{RevocationCounts, Revocations, Verified};
use crate::ratelimit::{Quota, RateLimiter, Verdict};
use crate::reason::Refusal;
use serde::Deserialize;
use std::sync::Arc;

pub use load::{InProcessLoad, LoadStore};
pub use zone::{Zone, ZoneCounters, ZoneSizes};
pub use zone_load::{sweep, ZoneLoad};
pub use zone_quotas::ZoneQuotas;
pub use zone_revocations::ZoneRevocations;

/// Who a state change reaches: this worker alone, or every worker of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Worker,
    Node,
}

impl Scope {
    /// `"worker"` or `"node"`, as the admin API says it.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Worker => "worker",
            Scope::Node => "node",
        }
    }
}

/// The revocation set a verifier consults for every request, cached tokens included.
pub trait RevocationStore: Send + Sync {
    /// Refuses `verified` when its `jti` is revoked, or its customer's tokens issued before some
    /// time are and it was issued earlier (a token without `iat` cannot prove it is newer).
    fn check(&self, verified: &Verified) -> Result<(), Refusal>;
    /// Revokes the token with `jti` until `forget_after_s`, when it has expired anyway.
    fn revoke_token(&self, jti: &str, forget_after_s: u64, now_s: u64);
    /// Revokes every token of `customer` issued before `issued_before_s`.
    fn revoke_customer(&self, customer: &str, issued_before_s: f64, now_s: u64);
    /// Lifts a customer's revocation; says whether there was one.
    fn lift_customer(&self, customer: &str, now_s: u64) -> bool;
    /// How many tokens and customers are revoked.
    fn counts(&self) -> RevocationCounts;
    /// Who a change reaches.
    fn scope(&self) -> Scope;
}

/// Per-customer GCRA state: one theoretical arrival time per customer, the rule in `ratelimit`.
pub trait QuotaStore: Send + Sync {
    /// Decides one request of `customer` under `quota` at `now_us` and counts it if allowed, as
    /// one atomic step against every other caller of the same store.
    fn check(&self, customer: &str, quota: &Quota, now_us: u64) -> Verdict;
    /// What `check` would decide at `now_us`, without counting anything (for explanations).
    fn peek(&self, customer: &str, quota: &Quota, now_us: u64) -> Verdict;
}

/// `[state]` as the core sees it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSettings {
    /// The node's zone file, created by `cellgate serve` before the workers start; none: this
    /// worker keeps its own state.
    #[serde(default)]
    pub zone: Option<String>,
    /// The longest a token can be valid (`exp - iat`, leeway included): a customer cut-off older
    /// than this refuses nothing any more and is forgotten; none: kept until lifted.
    #[serde(default)]
    pub max_token_lifetime_s: Option<u64>,
}

/// The stores `settings` ask for, and the zone when there is one.
pub struct Stores {
    pub revocations: Arc<dyn RevocationStore>,
    pub quotas: Box<dyn QuotaStore>,
    pub load: Arc<dyn LoadStore>,
    pub zone: Option<Arc<Zone>>,
}

/// Opens the configured stores: the zone's when `settings.zone` names one (refused when it is
/// not a zone of this layout, or too small for `cells` cells), else in-process ones.
pub fn build(settings: &StateSettings, cells: usize) -> Result<Stores, String> {
    match &settings.zone {
        Some(path) => {
            let zone = Arc::new(Zone::open(path)?);
            Ok(Stores {
                load: ZoneLoad::new(zone.clone(), cells)?,
                revocations: Arc::new(ZoneRevocations::new(
                    zone.clone(),
                    settings.max_token_lifetime_s,
                )),
                quotas: Box::new(ZoneQuotas::new(zone.clone())),
                zone: Some(zone),
            })
        }
        None => Ok(Stores {
            revocations: Arc::new(Revocations::with_max_token_lifetime(
                settings.max_token_lifetime_s,
            )),
            quotas: Box::new(RateLimiter::new()),
            load: Arc::new(InProcessLoad::new(cells)),
            zone: None,
        }),
    }
}
