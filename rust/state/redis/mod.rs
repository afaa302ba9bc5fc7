//! State shared across nodes through Redis: revocations (a sorted set and a hash, loaded at
//! start and kept current by pub/sub), quotas (an atomic GCRA script, exact or leased) and
//! breaker openings (broadcast). Each wraps the node's own store (the zone's, or the worker's):
//! revocations are always checked there, so a node keeps refusing what it knows when Redis is
//! gone, and quotas fall back to it when so configured.
//!
//! Redis keys and the channel are named under a prefix (`cellgate` by default):
//! `<prefix>:revoked:tokens` (jti scored by the second it may be forgotten),
//! `<prefix>:revoked:customers` (customer id to cut-off), `<prefix>:quota:<key>` (a customer's
//! TAT in microseconds) and the channel `<prefix>:events`.

mod breakers;
mod exchange;
mod link;
mod quotas;
mod revocations;

#[cfg(test)]
mod tests;

use super::{LoadStore, QuotaStore, RevocationStore};
use crate::clock::Clock;
use serde::Deserialize;
use std::sync::Arc;

pub use breakers::RedisLoad;
pub use exchange::{Exchange, SharedRevocation};
pub use link::{Link, LinkCounters};
pub use quotas::RedisQuotas;
pub use revocations::RedisRevocations;

/// How quotas are counted in Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaMode {
    /// Every request is one atomic check in Redis: exact across nodes, one round trip each.
    #[default]
    Exact,
    /// A worker takes up to `lease` requests of a customer's budget at a time and spends them
    /// locally: a round trip per lease, at most `lease - 1` requests a worker ahead of Redis.
    Leased,
}

/// What a quota check does while Redis cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// Money-moving requests (as `[risk.money_paths]` names them; every request when none are
    /// configured) are refused 503 `quota_unavailable`; others get the node's own limits.
    #[default]
    RefuseMoneyPaths,
    /// Every limited request is refused.
    Refuse,
    /// Every request gets the node's own limits.
    Local,
}

/// `[state] redis*` as the core sees it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` or `redis+unix:///path`.
    pub url: String,
    /// The longest a command may take before Redis is taken to be down.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// How long Redis is taken to be down after a failure before it is asked again.
    #[serde(default = "default_retry_ms")]
    pub retry_ms: u64,
    #[serde(default)]
    pub quotas: QuotaMode,
    /// Requests a lease takes at most (leased mode).
    #[serde(default = "default_lease")]
    pub lease: u32,
    /// How long a lease's unspent requests may be spent.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    #[serde(default)]
    pub unavailable: Unavailable,
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// For a `rediss://` URL: the CA bundle to trust (none: the system's roots) and the client
    /// certificate and key to present, as PEM text (the control plane reads the files).
    #[serde(default)]
    pub tls: Option<RedisTlsSettings>,
}

/// TLS to Redis, as PEM text.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTlsSettings {
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub cert_pem: Option<String>,
    #[serde(default)]
    pub key_pem: Option<String>,
}

fn default_timeout_ms() -> u64 {
    50
}
fn default_retry_ms() -> u64 {
    1_000
}
fn default_lease() -> u32 {
    10
}
fn default_lease_ms() -> u64 {
    1_000
}
fn default_prefix() -> String {
    "cellgate".to_owned()
}

/// The node's Redis-backed stores, each wrapping the node's own, and the exchange that keeps
/// them current.
pub struct Cluster {
    pub exchange: Arc<Exchange>,
    pub revocations: Arc<dyn RevocationStore>,
    pub quotas: Box<dyn QuotaStore>,
    pub load: Arc<dyn LoadStore>,
}

/// What a cluster wraps: the node's own stores, its cells' ids (in configuration order) and the
/// router's clock.
pub struct Local {
    pub revocations: Arc<dyn RevocationStore>,
    pub quotas: Box<dyn QuotaStore>,
    pub load: Arc<dyn LoadStore>,
    pub cell_ids: Vec<String>,
    pub clock: Clock,
    pub max_token_lifetime_s: Option<u64>,
}

impl Cluster {
    /// The stores `settings` describe around `local` (refused when a setting is out of range or
    /// the URL is not one redis-rs reads). Nothing connects until the first command, or until
    /// the exchange starts.
    pub fn new(settings: &RedisSettings, local: Local) -> Result<Cluster, String> {
        check(settings)?;
        let link = Arc::new(Link::open(settings)?);
        let exchange = Exchange::new(link.clone(), settings, &local);
        Ok(Cluster {
            revocations: Arc::new(RedisRevocations::new(
                local.revocations.clone(),
                exchange.clone(),
            )),
            quotas: Box::new(RedisQuotas::new(
                link,
                Arc::from(local.quotas),
                settings,
                &local.clock,
            )),
            load: Arc::new(RedisLoad::new(local.load.clone(), exchange.clone())),
            exchange,
        })
    }
}

fn check(settings: &RedisSettings) -> Result<(), String> {
    if settings.timeout_ms == 0 || settings.timeout_ms > 10_000 {
        return Err("redis_timeout_ms: must be 1..=10000".into());
    }
    if settings.retry_ms == 0 || settings.retry_ms > 60_000 {
        return Err("redis_retry_ms: must be 1..=60000".into());
    }
    if settings.lease == 0 || settings.lease > 10_000 {
        return Err("redis_lease: must be 1..=10000".into());
    }
    if settings.lease_ms == 0 || settings.lease_ms > 60_000 {
        return Err("redis_lease_ms: must be 1..=60000".into());
    }
    if settings.prefix.is_empty() || settings.prefix.contains(char::is_whitespace) {
        return Err("redis_prefix: must be non-empty, without spaces".into());
    }
    Ok(())
}
