//! The state every request reads and writes that must be one truth across workers: the
//! revocation set and each customer's GCRA state, each behind a small trait.
//!
//! Two implementations answer each trait: in-process (`auth::Revocations`,
//! `ratelimit::RateLimiter`: one worker's own) and a shared-memory zone per node (`zone`: every
//! worker of the node maps one file). `build` chooses from `[state]`; the router only sees the
//! traits. Each cell's in-flight count and health are behind `LoadStore` (`load`, `zone_load`).

mod key;
mod load;
mod process;
pub mod redis;
mod zone;
mod zone_load;
mod zone_quotas;
mod zone_revocations;

#[cfg(test)]
mod suite;

use crate::auth::{RevocationCounts, Revocations, Verified};
use crate::clock::Clock;
use crate::ratelimit::{Quota, RateLimiter, Verdict};
use crate::reason::Refusal;
use serde::Deserialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use key::StateKey;
pub use load::{InProcessLoad, LoadStore};
pub use redis::{Cluster, Exchange, RedisSettings};
pub use zone::{Zone, ZoneCounters, ZoneSizes};
pub use zone_load::{sweep, ZoneLoad};
pub use zone_quotas::ZoneQuotas;
pub use zone_revocations::ZoneRevocations;

/// Who a state change reaches: this worker alone, or every worker of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Worker,
    Node,
    /// Every node sharing the Redis.
    Cluster,
}

impl Scope {
    /// `"worker"` or `"node"`, as the admin API says it.
    pub fn name(self) -> &'static str {
        match self {
            Scope::Worker => "worker",
            Scope::Node => "node",
            Scope::Cluster => "cluster",
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

/// Whom a quota counts: a customer's id, and its key in shared stores (which a verified token
/// keeps, hashed once).
#[derive(Debug, Clone, Copy)]
pub struct Customer<'a> {
    pub id: &'a str,
    pub key: StateKey,
}

impl<'a> Customer<'a> {
    /// `id`, hashing its key (a verified token has it already: build the struct from that).
    pub fn new(id: &'a str) -> Self {
        Customer {
            id,
            key: StateKey::of(id),
        }
    }
}

/// A quota's verdict that a remote store gives later: the forward awaits it before the request
/// leaves for its cell; an unreachable store answers its configured refusal.
pub type LaterVerdict = Pin<Box<dyn Future<Output = Result<Verdict, Refusal>> + Send>>;

/// What a quota store says of a request: a verdict now, one to await, or a refusal (the store
/// cannot decide, and is configured to refuse then).
pub enum Admission {
    Now(Verdict),
    Later(LaterVerdict),
    Refused(Refusal),
}

/// Per-customer GCRA state: one theoretical arrival time per customer, the rule in `ratelimit`.
pub trait QuotaStore: Send + Sync {
    /// Decides one request of `customer` under `quota` at `now_us` and counts it if allowed, as
    /// one atomic step against every other caller of the same store.
    fn check(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict;
    /// What `check` would decide at `now_us`, without counting anything (for explanations).
    fn peek(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict;
    /// `check` as the router asks it: a store that must ask another machine answers later, so
    /// that no request waits for it on the loop's thread. `moves_money`: whether the request is
    /// on a money-moving path, for a store that refuses those when it cannot decide.
    fn admit(
        &self,
        customer: Customer<'_>,
        quota: &Quota,
        now_us: u64,
        _moves_money: bool,
    ) -> Admission {
        Admission::Now(self.check(customer, quota, now_us))
    }
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
    /// Redis, shared by every node; none: state stays on the node.
    #[serde(default)]
    pub redis: Option<RedisSettings>,
}

/// The stores `settings` ask for, and the zone when there is one.
pub struct Stores {
    pub revocations: Arc<dyn RevocationStore>,
    pub quotas: Box<dyn QuotaStore>,
    pub load: Arc<dyn LoadStore>,
    pub zone: Option<Arc<Zone>>,
    /// What keeps the node in step with the others, when `[state] redis` is set.
    pub exchange: Option<Arc<Exchange>>,
}

/// Opens the configured stores: the zone's when `settings.zone` names one (refused when it is
/// not a zone of this layout, or too small for the cells), else in-process ones; wrapped in
/// Redis's when `settings.redis` is set. `cell_ids` are the cells in configuration order.
pub fn build(
    settings: &StateSettings,
    cell_ids: Vec<String>,
    clock: &Clock,
) -> Result<Stores, String> {
    let cells = cell_ids.len();
    let Stores {
        revocations,
        quotas,
        load,
        zone,
        ..
    } = match &settings.zone {
        Some(path) => {
            let zone = Arc::new(Zone::open(path).map_err(|e| format!("zone: {e}"))?);
            Stores {
                revocations: Arc::new(ZoneRevocations::new(
                    zone.clone(),
                    settings.max_token_lifetime_s,
                )),
                quotas: Box::new(ZoneQuotas::new(zone.clone())),
                load: ZoneLoad::new(zone.clone(), cells).map_err(|e| format!("zone: {e}"))?,
                zone: Some(zone),
                exchange: None,
            }
        }
        None => Stores {
            revocations: Arc::new(Revocations::with_max_token_lifetime(
                settings.max_token_lifetime_s,
            )),
            quotas: Box::new(RateLimiter::new()),
            load: Arc::new(InProcessLoad::new(cells)),
            zone: None,
            exchange: None,
        },
    };
    let Some(redis) = &settings.redis else {
        return Ok(Stores {
            revocations,
            quotas,
            load,
            zone,
            exchange: None,
        });
    };
    let local = redis::Local {
        revocations,
        quotas,
        load,
        cell_ids,
        clock: clock.clone(),
        max_token_lifetime_s: settings.max_token_lifetime_s,
    };
    let cluster = Cluster::new(redis, local)?;
    Ok(Stores {
        revocations: cluster.revocations,
        quotas: cluster.quotas,
        load: cluster.load,
        zone,
        exchange: Some(cluster.exchange),
    })
}
