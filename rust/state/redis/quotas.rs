//! Quotas in Redis: one GCRA script (`gcra.lua`) decides a customer's request, or takes a lease
//! of several, atomically for every node. A check that needs Redis is answered later, on the
//! forward's task, so no request waits for Redis on the loop's thread.
//!
//! Leased mode: a worker spends a lease's unspent requests without asking Redis, for at most
//! `lease_ms`. Redis counted them when the lease was taken, so no more requests are admitted
//! than the exact rule allows, only some earlier: at any moment a customer can be admitted at
//! most `(lease - 1)` requests per worker (over every node) beyond what the exact rule would.
//!
//! A customer Redis found limited is refused here until the moment Redis said its next
//! request conforms: the TAT in Redis only moves later until then, so Redis would refuse each
//! of them too. A client hammering past its limit costs Redis one check a retry-after.

use super::link::Link;
use super::{QuotaMode, RedisSettings, Unavailable};
use crate::clock::Clock;
use crate::ratelimit::{in_micros, verdict_in_micros, Quota, Verdict};
use crate::reason::{Reason, Refusal};
use crate::runtime::runtime;
use crate::state::{Admission, Customer, QuotaStore, StateKey};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

const GCRA: &str = include_str!("gcra.lua");
/// Leases (and limited customers) held before expired ones are swept.
const SWEEP_LEASES_AT: usize = 16_384;

/// A customer Redis found limited, in the router's clock.
#[derive(Debug, Clone, Copy)]
struct LimitedUntil {
    /// When the next request conforms.
    conforms_at_us: u64,
    /// When the bucket is full again.
    tat_us: u64,
    /// The rule it was limited by (emission and tolerance, µs): another rule asks again.
    rule: (u64, u64),
}

/// Requests of a customer's budget this worker took from Redis and has not spent.
#[derive(Debug, Clone, Copy)]
struct Lease {
    left: u32,
    until_us: u64,
    reset_s: u64,
    /// What Redis still held for the customer when the lease was taken: with `left`, what the
    /// answer's RateLimit field reports.
    in_redis: u32,
}

/// The worker's leases, and the customers whose lease is being asked for: a request that finds
/// none waits for that answer instead of asking again, so that requests arriving together do
/// not each take a lease (and leave all but one unspent, refusing the customer early).
#[derive(Default)]
struct Leases {
    held: HashMap<StateKey, Lease>,
    asking: HashMap<StateKey, watch::Receiver<()>>,
}

/// Ends an ask for a lease, however it ends (answered, failed, or dropped with its request):
/// its waiters wake and find the lease, or ask themselves.
struct Asking {
    shared: Arc<Shared>,
    key: StateKey,
    _done: watch::Sender<()>,
}

impl Drop for Asking {
    fn drop(&mut self) {
        self.shared.leases().asking.remove(&self.key);
    }
}

struct Shared {
    link: Arc<Link>,
    local: Arc<dyn QuotaStore>,
    mode: QuotaMode,
    lease: u32,
    lease_us: u64,
    unavailable: Unavailable,
    prefix: String,
    /// Whether Redis's clock decides (the router's is the system's): every node then agrees.
    server_clock: bool,
    script: redis::Script,
    leases: Mutex<Leases>,
    limited: Mutex<HashMap<StateKey, LimitedUntil>>,
}

/// Each customer's GCRA state, in Redis.
pub struct RedisQuotas {
    shared: Arc<Shared>,
}

impl RedisQuotas {
    /// Quotas through `link`; `local` answers while Redis is down, when so configured.
    pub fn new(
        link: Arc<Link>,
        local: Arc<dyn QuotaStore>,
        settings: &RedisSettings,
        clock: &Clock,
    ) -> Self {
        RedisQuotas {
            shared: Arc::new(Shared {
                link,
                local,
                mode: settings.quotas,
                lease: settings.lease,
                lease_us: settings.lease_ms * 1_000,
                unavailable: settings.unavailable,
                prefix: settings.prefix.clone(),
                server_clock: matches!(clock, Clock::System),
                script: redis::Script::new(GCRA),
                leases: Mutex::default(),
                limited: Mutex::default(),
            }),
        }
    }
}

impl Shared {
    fn key_name(&self, key: StateKey) -> String {
        format!("{}:quota:{key}", self.prefix)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, Leases> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limited(&self) -> std::sync::MutexGuard<'_, HashMap<StateKey, LimitedUntil>> {
        self.limited.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The refusal Redis would give `key` now, known from its last answer.
    fn still_limited(&self, key: StateKey, quota: &Quota, now_us: u64) -> Option<Verdict> {
        let mut limited = self.limited();
        let known = *limited.get(&key)?;
        if now_us >= known.conforms_at_us || known.rule != in_micros(quota) {
            limited.remove(&key);
            return None;
        }
        drop(limited);
        self.link.counters.limited_locally.fetch_add(1, Relaxed);
        Some(Verdict::Limited {
            limit: quota.burst(),
            retry_after_s: (known.conforms_at_us - now_us).div_ceil(1_000_000),
            reset_s: (known.tat_us - now_us).div_ceil(1_000_000),
        })
    }

    /// Keeps that Redis found `key` limited at `now_us` with its TAT at `tat_us` at its own
    /// `redis_now_us`.
    fn keep_limited(
        &self,
        key: StateKey,
        quota: &Quota,
        now_us: u64,
        tat_us: u64,
        redis_now_us: u64,
    ) {
        let rule = in_micros(quota);
        let ahead = |at_us: u64| now_us.saturating_add(at_us.saturating_sub(redis_now_us));
        let known = LimitedUntil {
            conforms_at_us: ahead(tat_us.saturating_sub(rule.1)),
            tat_us: ahead(tat_us),
            rule,
        };
        let mut limited = self.limited();
        if limited.len() >= SWEEP_LEASES_AT {
            limited.retain(|_, known| known.conforms_at_us > now_us);
        }
        limited.insert(key, known);
    }

    /// Spends one request of a lease held for `key`, if there is one still valid.
    fn spend_lease(&self, key: StateKey, quota: &Quota, now_us: u64) -> Option<Verdict> {
        spend(&mut self.leases().held, key, quota, now_us)
    }

    /// Keeps `left` requests of a lease just taken; returns how many the lease holds now.
    fn keep_lease(
        &self,
        key: StateKey,
        left: u32,
        now_us: u64,
        reset_s: u64,
        in_redis: u32,
    ) -> u32 {
        let held = &mut self.leases().held;
        if held.len() >= SWEEP_LEASES_AT {
            held.retain(|_, lease| lease.until_us > now_us);
        }
        // Requests taken by two asks at once add up, to at most a lease less the one spent.
        let unspent = held
            .get(&key)
            .filter(|lease| lease.until_us > now_us)
            .map_or(0, |lease| lease.left);
        let left = unspent.saturating_add(left).min(self.lease - 1);
        held.insert(
            key,
            Lease {
                left,
                until_us: now_us + self.lease_us,
                reset_s,
                in_redis,
            },
        );
        left
    }

    /// Leased mode: a request of the lease held, or the wait for one being asked for, or an ask.
    fn admit_leased(
        self: &Arc<Self>,
        customer: Customer<'_>,
        quota: &Quota,
        now_us: u64,
        moves_money: bool,
    ) -> Admission {
        let mut leases = self.leases();
        if let Some(verdict) = spend(&mut leases.held, customer.key, quota, now_us) {
            return Admission::Now(verdict);
        }
        let (id, key, quota) = (customer.id.to_owned(), customer.key, quota.clone());
        if let Some(answer) = leases.asking.get(&key) {
            let mut answer = answer.clone();
            drop(leases);
            let shared = self.clone();
            return started(async move {
                // Resolves when the ask ends (its sender is dropped), or at the timeout.
                let _ = tokio::time::timeout(shared.link.timeout, answer.changed()).await;
                match shared.spend_lease(key, &quota, now_us) {
                    Some(verdict) => Ok(verdict),
                    None => shared.ask(id, key, quota, now_us, moves_money).await,
                }
            });
        }
        let (done, answer) = watch::channel(());
        leases.asking.insert(key, answer);
        drop(leases);
        let asking = Asking {
            shared: self.clone(),
            key,
            _done: done,
        };
        let shared = self.clone();
        started(async move {
            let verdict = shared.ask(id, key, quota, now_us, moves_money).await;
            drop(asking);
            verdict
        })
    }

    /// The answer while Redis cannot be reached: the node's own limits, or a refusal.
    fn unreachable(
        &self,
        customer: Customer<'_>,
        quota: &Quota,
        now_us: u64,
        moves_money: bool,
    ) -> Result<Verdict, Refusal> {
        let refuse = match self.unavailable {
            Unavailable::Refuse => true,
            Unavailable::Local => false,
            Unavailable::RefuseMoneyPaths => moves_money,
        };
        if refuse {
            self.link
                .counters
                .refused_quota_checks
                .fetch_add(1, Relaxed);
            let retry_s = self.link.retry().as_secs().max(1);
            return Err(Refusal::new(
                Reason::QuotaUnavailable,
                format!(
                    "the {} quota is shared through Redis at {}, which cannot be reached now",
                    quota.name(),
                    self.link.shown_url
                ),
            )
            .with_field("retry-after", retry_s.to_string()));
        }
        self.link.counters.local_quota_checks.fetch_add(1, Relaxed);
        Ok(self.local.check(customer, quota, now_us))
    }

    /// Asks Redis for `wanted` requests of the customer's budget; spends one, keeps the rest
    /// as a lease.
    async fn ask(
        self: Arc<Self>,
        customer: String,
        key: StateKey,
        quota: Quota,
        now_us: u64,
        moves_money: bool,
    ) -> Result<Verdict, Refusal> {
        let (emission_us, tolerance_us) = in_micros(&quota);
        let wanted = match self.mode {
            QuotaMode::Exact => 1,
            QuotaMode::Leased => self.lease,
        };
        let now_arg: i64 = if self.server_clock { -1 } else { now_us as i64 };
        let mut connection = self.link.connection();
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.key_name(key))
            .arg(emission_us)
            .arg(tolerance_us)
            .arg(wanted)
            .arg(now_arg);
        let answer = self
            .link
            .run(invocation.invoke_async::<(u64, u64, u64)>(&mut connection))
            .await;
        match answer {
            Ok((taken, tat_us, redis_now_us)) => {
                if taken == 0 {
                    self.keep_limited(key, &quota, now_us, tat_us, redis_now_us);
                }
                let mut verdict = verdict_in_micros(&quota, taken, tat_us, redis_now_us);
                if let (
                    true,
                    Verdict::Allowed {
                        remaining, reset_s, ..
                    },
                ) = (taken > 1, &mut verdict)
                {
                    // What Redis still holds, and what this worker holds of the lease.
                    let held =
                        self.keep_lease(key, (taken - 1) as u32, now_us, *reset_s, *remaining);
                    *remaining = remaining.saturating_add(held).min(quota.burst());
                }
                Ok(verdict)
            }
            Err(_) => {
                let customer = Customer { id: &customer, key };
                self.unreachable(customer, &quota, now_us, moves_money)
            }
        }
    }
}

impl QuotaStore for RedisQuotas {
    fn check(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict {
        let limited = Verdict::Limited {
            limit: quota.burst(),
            retry_after_s: 1,
            reset_s: 1,
        };
        match self.admit(customer, quota, now_us, true) {
            Admission::Now(verdict) => verdict,
            Admission::Refused(_) => limited,
            Admission::Later(later) => runtime().block_on(later).unwrap_or(limited),
        }
    }

    fn peek(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict {
        let shared = &self.shared;
        if !shared.link.available() {
            return shared.local.peek(customer, quota, now_us);
        }
        let key = shared.key_name(customer.key);
        let asked = runtime().block_on(async {
            let mut connection = shared.link.connection();
            let mut pipe = redis::pipe();
            pipe.cmd("TIME").cmd("GET").arg(&key);
            shared
                .link
                .run(pipe.query_async::<((u64, u64), Option<u64>)>(&mut connection))
                .await
        });
        match asked {
            Ok(((seconds, micros), tat_us)) => {
                let now_us = match shared.server_clock {
                    true => seconds * 1_000_000 + micros,
                    false => now_us,
                };
                let tat_us = tat_us.unwrap_or(0).max(now_us);
                verdict_in_micros(quota, 0, tat_us, now_us)
            }
            Err(_) => shared.local.peek(customer, quota, now_us),
        }
    }

    fn admit(
        &self,
        customer: Customer<'_>,
        quota: &Quota,
        now_us: u64,
        moves_money: bool,
    ) -> Admission {
        let shared = &self.shared;
        if !shared.link.available() {
            return match shared.unreachable(customer, quota, now_us, moves_money) {
                Ok(verdict) => Admission::Now(verdict),
                Err(refusal) => Admission::Refused(refusal),
            };
        }
        // Before any lease: a worker asks Redis only once its lease is spent, so a customer
        // found limited holds none here (and refusing one would only be early, never over).
        if let Some(verdict) = shared.still_limited(customer.key, quota, now_us) {
            return Admission::Now(verdict);
        }
        if shared.mode == QuotaMode::Leased {
            return shared.admit_leased(customer, quota, now_us, moves_money);
        }
        started(shared.clone().ask(
            customer.id.to_owned(),
            customer.key,
            quota.clone(),
            now_us,
            moves_money,
        ))
    }
}

/// Spends one request of the lease `held` has for `key`, if one is still valid.
fn spend(
    held: &mut HashMap<StateKey, Lease>,
    key: StateKey,
    quota: &Quota,
    now_us: u64,
) -> Option<Verdict> {
    let lease = held.get_mut(&key)?;
    if lease.left == 0 || lease.until_us <= now_us {
        held.remove(&key);
        return None;
    }
    lease.left -= 1;
    Some(Verdict::Allowed {
        limit: quota.burst(),
        remaining: lease.in_redis.saturating_add(lease.left).min(quota.burst()),
        reset_s: lease.reset_s,
    })
}

/// A verdict Redis gives later, asked now: the ask runs on the worker's runtime from the moment
/// of the decision, so it counts whatever becomes of the request (a body that never comes, a
/// client gone) and overlaps the body's reading, as a local store counts at once.
fn started(ask: impl Future<Output = Result<Verdict, Refusal>> + Send + 'static) -> Admission {
    let task = runtime().spawn(ask);
    Admission::Later(Box::pin(async move {
        task.await.unwrap_or_else(|_| {
            Err(Refusal::new(
                Reason::Internal,
                "the quota check in Redis ended before answering",
            ))
        })
    }))
}
