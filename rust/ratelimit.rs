//! Per-customer rate limiting: GCRA with a quota per tier, and the HTTP fields that report it.
//!
//! The generic cell rate algorithm keeps one number per customer, its theoretical arrival time
//! (TAT). With emission interval `T = period_s / requests` and burst tolerance
//! `tau = (burst - 1) * T`, a request at `now` conforms when `now >= TAT - tau`, and then
//! `TAT = max(TAT, now) + T`; a request that does not conform changes nothing.
//!
//! Time is injected: every call takes `now_us`, microseconds since an arbitrary epoch. Inside,
//! time is integer nanoseconds, and `T` is rounded up to the next nanosecond so that rounding can
//! never admit more than the quota. Sums saturate at `u64::MAX` ns (about 584 years after the
//! epoch). `python/cellgate/reference/ratelimit.py` states the same rules in plain Python.
//!
//! The response fields follow "RateLimit header fields for HTTP",
//! draft-ietf-httpapi-ratelimit-headers-11 (23 May 2026): `RateLimit-Policy` (§3) is
//! `"<tier>";q=<requests>;w=<period_s>` and `RateLimit` (§4) is `"<tier>";r=<remaining>;t=<s>`,
//! both Structured Field lists whose item is the policy name as an sf-string. `Retry-After` is
//! RFC 9110 delay-seconds. On a limited response `t` is the Retry-After delay, because §6 says
//! Retry-After SHOULD NOT point earlier than the end of the effective window.

use crate::state::Customer;
use foldhash::fast::RandomState;
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard};

pub(crate) const NS_PER_US: u64 = 1_000;
const NS_PER_S: u64 = 1_000_000_000;
const SHARDS: usize = 16;
/// Customers a shard holds before its first sweep of expired entries.
const DEFAULT_SWEEP_AT: usize = 4096;

/// One tier's quota as configured: `requests` per `period_s` seconds, at most `burst` at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    /// Requests allowed per period, sustained (> 0).
    pub requests: u32,
    /// The period in seconds (> 0); also the `w` of `RateLimit-Policy`.
    pub period_s: u32,
    /// The most requests admitted at once from a full bucket (>= 1).
    pub burst: u32,
}

/// A tier's compiled quota: the GCRA constants, and the numbers the response fields report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    name: Box<str>,
    requests: u32,
    period_s: u32,
    burst: u32,
    emission_ns: u64,
    tolerance_ns: u64,
    /// The `RateLimit-Policy` field value, the same on every answer.
    policy: Box<str>,
}

impl Quota {
    /// Checks and compiles tier `name`'s quota; errors are `<path>.<field>: message`, with
    /// `path` where the quota was configured (e.g. `tiers.retail.rate_limit`).
    pub fn new(name: &str, settings: &QuotaSettings, path: &str) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        if name.is_empty() || !name.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            errors.push(format!(
                "{path}: a tier name must be non-empty printable ASCII \
                 (it names the RateLimit policy)"
            ));
        }
        if settings.requests == 0 {
            errors.push(format!("{path}.requests: must be > 0"));
        }
        if settings.period_s == 0 {
            errors.push(format!("{path}.period_s: must be > 0"));
        }
        if settings.burst == 0 {
            errors.push(format!("{path}.burst: must be >= 1"));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let emission_ns =
            (u64::from(settings.period_s) * NS_PER_S).div_ceil(settings.requests.into());
        let tolerance_ns = u64::from(settings.burst - 1)
            .checked_mul(emission_ns)
            .filter(|tolerance_ns| tolerance_ns.checked_add(emission_ns).is_some());
        let Some(tolerance_ns) = tolerance_ns else {
            return Err(vec![format!(
                "{path}.burst: burst * period_s / requests is too long \
                 (over 584 years)"
            )]);
        };
        let mut quota = Quota {
            name: name.into(),
            requests: settings.requests,
            period_s: settings.period_s,
            burst: settings.burst,
            emission_ns,
            tolerance_ns,
            policy: Box::default(),
        };
        quota.policy = PolicyField(&quota).to_string().into();
        Ok(quota)
    }

    /// The tier name, which is also the policy name in the RateLimit fields.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Requests allowed per period, sustained.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// The period in seconds.
    pub fn period_s(&self) -> u32 {
        self.period_s
    }

    /// The most requests admitted at once from a full bucket; also the verdicts' `limit`.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The emission interval T in nanoseconds, `period_s / requests` rounded up.
    pub fn emission_ns(&self) -> u64 {
        self.emission_ns
    }

    /// The burst tolerance tau in nanoseconds, `(burst - 1) * T`.
    pub fn tolerance_ns(&self) -> u64 {
        self.tolerance_ns
    }
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request conforms and has been counted.
    Allowed {
        /// The bucket's capacity: the quota's burst.
        limit: u32,
        /// How many more requests would conform right now.
        remaining: u32,
        /// Whole seconds, rounded up, until the bucket is full again.
        reset_s: u64,
    },
    /// The request does not conform (answer 429); nothing has been counted.
    Limited {
        /// The bucket's capacity: the quota's burst.
        limit: u32,
        /// Whole seconds, rounded up and at least 1, until this request would conform.
        retry_after_s: u64,
        /// Whole seconds, rounded up, until the bucket is full again.
        reset_s: u64,
    },
}

impl Verdict {
    /// Whether the request may go on.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Verdict::Allowed { .. })
    }
}

/// Per-customer GCRA state, one TAT per customer, safe to share between threads.
///
/// Customers are spread over 16 shards, each a `Mutex<HashMap>`. A customer whose TAT has passed
/// behaves exactly like one never seen, so a shard that reaches its sweep threshold drops those
/// entries before it adds a customer, and sets its next threshold to twice what is left: memory
/// stays within about twice the customers whose TAT lies ahead, plus the threshold per shard.
pub struct RateLimiter {
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
    min_sweep_at: usize,
}

struct Shard {
    tat_ns: HashMap<Box<str>, u64, RandomState>,
    sweep_at: usize,
}

impl Shard {
    /// Adds a customer, first dropping every entry whose TAT is not after `now_ns` if it is full.
    fn insert(&mut self, customer: &str, tat_ns: u64, now_ns: u64, min_sweep_at: usize) {
        if self.tat_ns.len() >= self.sweep_at {
            self.sweep(now_ns, min_sweep_at);
        }
        self.tat_ns.insert(customer.into(), tat_ns);
    }

    /// Drops expired entries and returns how many went.
    fn sweep(&mut self, now_ns: u64, min_sweep_at: usize) -> usize {
        let before = self.tat_ns.len();
        self.tat_ns.retain(|_, tat_ns| *tat_ns > now_ns);
        self.sweep_at = min_sweep_at.max(2 * self.tat_ns.len());
        self.tat_ns.shrink_to(self.sweep_at);
        before - self.tat_ns.len()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl RateLimiter {
    /// An empty limiter whose shards sweep expired customers once they hold 4096.
    pub fn new() -> Self {
        Self::with_sweep_threshold(DEFAULT_SWEEP_AT)
    }

    /// An empty limiter whose shards sweep expired customers once they hold `min_sweep_at` (>= 1).
    pub fn with_sweep_threshold(min_sweep_at: usize) -> Self {
        let min_sweep_at = min_sweep_at.max(1);
        RateLimiter {
            hasher: RandomState::default(),
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    tat_ns: HashMap::default(),
                    sweep_at: min_sweep_at,
                })
            }),
            min_sweep_at,
        }
    }

    /// Decides one request of `customer` under `quota` at `now_us`, counting it only if allowed.
    ///
    /// Allocation-free for a customer already held; a new customer costs one key allocation.
    pub fn check(&self, customer: &str, quota: &Quota, now_us: u64) -> Verdict {
        let now_ns = now_us.saturating_mul(NS_PER_US);
        let mut shard = self.shard(customer);
        match shard.tat_ns.get_mut(customer) {
            Some(tat_ns) => {
                let (verdict, new_tat_ns) = decide(*tat_ns, quota, now_ns);
                if let Some(new_tat_ns) = new_tat_ns {
                    *tat_ns = new_tat_ns;
                }
                verdict
            }
            None => {
                let (verdict, new_tat_ns) = decide(now_ns, quota, now_ns);
                if let Some(new_tat_ns) = new_tat_ns {
                    shard.insert(customer, new_tat_ns, now_ns, self.min_sweep_at);
                }
                verdict
            }
        }
    }

    /// What `check` would decide at `now_us`, without counting anything (for explanations).
    pub fn peek(&self, customer: &str, quota: &Quota, now_us: u64) -> Verdict {
        let now_ns = now_us.saturating_mul(NS_PER_US);
        let tat_ns = self
            .shard(customer)
            .tat_ns
            .get(customer)
            .copied()
            .unwrap_or(now_ns);
        decide(tat_ns, quota, now_ns).0
    }

    /// Drops every customer whose bucket is full at `now_us` and returns how many went.
    pub fn evict_expired(&self, now_us: u64) -> usize {
        let now_ns = now_us.saturating_mul(NS_PER_US);
        self.shards
            .iter()
            .map(|shard| lock(shard).sweep(now_ns, self.min_sweep_at))
            .sum()
    }

    /// How many customers the limiter holds state for.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).tat_ns.len())
            .sum()
    }

    /// Whether the limiter holds no customer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, customer: &str) -> MutexGuard<'_, Shard> {
        let index = self.hasher.hash_one(customer) as usize % SHARDS;
        lock(&self.shards[index])
    }
}

impl crate::state::QuotaStore for RateLimiter {
    fn check(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict {
        RateLimiter::check(self, customer.id, quota, now_us)
    }
    fn peek(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict {
        RateLimiter::peek(self, customer.id, quota, now_us)
    }
}

/// Locks a shard; a panic elsewhere cannot leave a map of plain integers inconsistent.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The GCRA decision for one request: the verdict, and the new TAT if the request conforms.
pub(crate) fn decide(tat_ns: u64, quota: &Quota, now_ns: u64) -> (Verdict, Option<u64>) {
    decide_by(tat_ns, quota, quota.emission_ns, quota.tolerance_ns, now_ns)
}

/// The emission interval and burst tolerance of `quota` in whole microseconds (the interval
/// rounded up, so never admitting more), as Redis's script computes in.
pub(crate) fn in_micros(quota: &Quota) -> (u64, u64) {
    let emission_us = quota.emission_ns.div_ceil(NS_PER_US);
    (emission_us, u64::from(quota.burst - 1) * emission_us)
}

/// The verdict of a check decided in whole microseconds (by Redis's script): `taken` requests
/// counted (0: limited) leaving `tat_us` at `now_us`; the verdict is the last one's.
pub(crate) fn verdict_in_micros(quota: &Quota, taken: u64, tat_us: u64, now_us: u64) -> Verdict {
    let (emission_us, tolerance_us) = in_micros(quota);
    let ns = |us: u64| us.saturating_mul(NS_PER_US);
    let (emission_ns, tolerance_ns) = (ns(emission_us), ns(tolerance_us));
    // Allowed: decided from the TAT before the last request taken, which it moved to `tat_us`.
    let before_ns = match taken {
        0 => ns(tat_us),
        _ => ns(tat_us).saturating_sub(emission_ns).max(ns(now_us)),
    };
    decide_by(before_ns, quota, emission_ns, tolerance_ns, ns(now_us)).0
}

fn decide_by(
    tat_ns: u64,
    quota: &Quota,
    emission_ns: u64,
    tolerance_ns: u64,
    now_ns: u64,
) -> (Verdict, Option<u64>) {
    let conforms_at_ns = tat_ns.saturating_sub(tolerance_ns);
    if now_ns < conforms_at_ns {
        let verdict = Verdict::Limited {
            limit: quota.burst,
            retry_after_s: (conforms_at_ns - now_ns).div_ceil(NS_PER_S),
            reset_s: (tat_ns - now_ns).div_ceil(NS_PER_S),
        };
        return (verdict, None);
    }
    let new_tat_ns = tat_ns.max(now_ns).saturating_add(emission_ns);
    // Request k more (k >= 1) would conform now iff now >= new_tat + (k - 1) * T - tau.
    let remaining = match now_ns.saturating_add(tolerance_ns).checked_sub(new_tat_ns) {
        Some(headroom_ns) => (headroom_ns / emission_ns + 1).min(quota.burst.into()) as u32,
        None => 0,
    };
    let verdict = Verdict::Allowed {
        limit: quota.burst,
        remaining,
        reset_s: (new_tat_ns - now_ns).div_ceil(NS_PER_S),
    };
    (verdict, Some(new_tat_ns))
}

/// The `RateLimit-Policy` field value for `quota`: `"<tier>";q=<requests>;w=<period_s>`.
pub fn policy_field(quota: &Quota) -> &str {
    &quota.policy
}

/// How a `RateLimit-Policy` field value is written, once per quota.
struct PolicyField<'a>(&'a Quota);

impl fmt::Display for PolicyField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_sf_string(f, &self.0.name)?;
        write!(f, ";q={};w={}", self.0.requests, self.0.period_s)
    }
}

/// The `RateLimit` field value for `verdict` under `quota`: `"<tier>";r=<remaining>;t=<seconds>`.
///
/// Allowed: `r` is the remaining count and `t` the seconds until the bucket is full again.
/// Limited: `r=0` and `t` is the Retry-After delay (draft -11 §6).
pub fn ratelimit_field<'a>(quota: &'a Quota, verdict: &Verdict) -> RateLimitField<'a> {
    let (remaining, window_s) = match *verdict {
        Verdict::Allowed {
            remaining, reset_s, ..
        } => (remaining, reset_s),
        Verdict::Limited { retry_after_s, .. } => (0, retry_after_s),
    };
    RateLimitField {
        name: &quota.name,
        remaining,
        window_s,
    }
}

/// A `RateLimit` field value; its `Display` writes it without allocating.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitField<'a> {
    name: &'a str,
    remaining: u32,
    window_s: u64,
}

impl fmt::Display for RateLimitField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_sf_string(f, self.name)?;
        write!(f, ";r={};t={}", self.remaining, self.window_s)
    }
}

/// The `Retry-After` delay-seconds (RFC 9110, never 0) of a limited verdict; None if allowed.
pub fn retry_after_field(verdict: &Verdict) -> Option<u64> {
    match *verdict {
        Verdict::Allowed { .. } => None,
        Verdict::Limited { retry_after_s, .. } => Some(retry_after_s),
    }
}

/// Writes an RFC 8941 sf-string: quoted, with `"` and `\` escaped (names are printable ASCII).
fn write_sf_string(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    f.write_char('"')?;
    for ch in value.chars() {
        if ch == '"' || ch == '\\' {
            f.write_char('\\')?;
        }
        f.write_char(ch)?;
    }
    f.write_char('"')
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    const S: u64 = 1_000_000;
    const MS: u64 = 1_000;
    /// An arbitrary start, far from zero so that nothing leans on the epoch.
    const T0: u64 = 1_700_000_000 * S;

    fn quota(requests: u32, period_s: u32, burst: u32) -> Quota {
        let settings = QuotaSettings {
            requests,
            period_s,
            burst,
        };
        Quota::new("retail", &settings, "tiers.retail.rate_limit").unwrap()
    }

    fn allowed(limit: u32, remaining: u32, reset_s: u64) -> Verdict {
        Verdict::Allowed {
            limit,
            remaining,
            reset_s,
        }
    }

    fn limited(limit: u32, retry_after_s: u64, reset_s: u64) -> Verdict {
        Verdict::Limited {
            limit,
            retry_after_s,
            reset_s,
        }
    }

    #[test]
    fn the_burst_is_admitted_at_once_and_the_next_request_is_limited() {
        // 60 per 60 s: T = 1 s; burst 5: tau = 4 s.
        let q = quota(60, 60, 5);
        let limiter = RateLimiter::new();
        for (i, remaining) in [4, 3, 2, 1, 0].into_iter().enumerate() {
            let reset_s = i as u64 + 1;
            assert_eq!(
                limiter.check("alice", &q, T0),
                allowed(5, remaining, reset_s)
            );
        }
        assert_eq!(limiter.check("alice", &q, T0), limited(5, 1, 5));
        assert_eq!(limiter.check("alice", &q, T0 + 500 * MS), limited(5, 1, 5));
        assert_eq!(limiter.check("alice", &q, T0 + S), allowed(5, 0, 5));
        assert_eq!(limiter.check("alice", &q, T0 + S), limited(5, 1, 5));
    }

    #[test]
    fn the_steady_rate_is_sustained() {
        // 10 per 1 s, burst 1: one every 100 ms passes; one 99 ms after the last is limited.
        let q = quota(10, 1, 1);
        let limiter = RateLimiter::new();
        let mut now = T0;
        assert_eq!(limiter.check("alice", &q, now), allowed(1, 0, 1));
        for _ in 0..50 {
            assert_eq!(limiter.check("alice", &q, now + 99 * MS), limited(1, 1, 1));
            now += 100 * MS;
            assert_eq!(limiter.check("alice", &q, now), allowed(1, 0, 1));
        }
        assert_eq!(now, T0 + 5 * S);
    }

    #[test]
    fn a_rate_that_does_not_divide_evenly_rounds_the_interval_up() {
        // 3 per 1 s: T = 333_333_334 ns.
        let q = quota(3, 1, 1);
        assert_eq!(q.emission_ns(), 333_333_334);
        let limiter = RateLimiter::new();
        assert!(limiter.check("alice", &q, T0).is_allowed());
        assert!(!limiter.check("alice", &q, T0 + 333_333).is_allowed());
        assert!(limiter.check("alice", &q, T0 + 333_334).is_allowed());
        assert!(!limiter.check("alice", &q, T0 + 666_667).is_allowed());
        assert!(limiter.check("alice", &q, T0 + 666_668).is_allowed());
    }

    #[test]
    fn retry_after_is_rounded_up_to_the_second_and_never_zero() {
        // 1 per 10 s, burst 1.
        let q = quota(1, 10, 1);
        let limiter = RateLimiter::new();
        assert_eq!(limiter.check("alice", &q, T0), allowed(1, 0, 10));
        assert_eq!(limiter.check("alice", &q, T0 + 1), limited(1, 10, 10));
        assert_eq!(limiter.check("alice", &q, T0 + S), limited(1, 9, 9));
        assert_eq!(limiter.check("alice", &q, T0 + S + 1), limited(1, 9, 9));
        assert_eq!(limiter.check("alice", &q, T0 + 9 * S), limited(1, 1, 1));
        assert_eq!(
            limiter.check("alice", &q, T0 + 10 * S - 1),
            limited(1, 1, 1)
        );
        assert_eq!(limiter.check("alice", &q, T0 + 10 * S), allowed(1, 0, 10));
    }

    #[test]
    fn remaining_and_reset_follow_the_bucket() {
        // 2 per 1 s (T = 500 ms), burst 4 (tau = 1.5 s).
        let q = quota(2, 1, 4);
        let limiter = RateLimiter::new();
        assert_eq!(limiter.check("alice", &q, T0), allowed(4, 3, 1));
        assert_eq!(limiter.check("alice", &q, T0), allowed(4, 2, 1));
        assert_eq!(limiter.check("alice", &q, T0), allowed(4, 1, 2));
        // 1.1 s later: TAT was T0 + 1.5 s, so one interval and a bit has come back.
        assert_eq!(limiter.check("alice", &q, T0 + 1100 * MS), allowed(4, 2, 1));
        // Idle long enough, the bucket is full again: exactly like a new customer.
        assert_eq!(limiter.check("alice", &q, T0 + 60 * S), allowed(4, 3, 1));
    }

    #[test]
    fn verdicts_decided_in_whole_microseconds_match_the_limiter() {
        // 7 per 3 s does not divide into whole microseconds: Redis's interval rounds up.
        let q = quota(7, 3, 4);
        let (emission_us, tolerance_us) = in_micros(&q);
        assert_eq!(emission_us, 428_572);
        assert_eq!(tolerance_us, 3 * emission_us);
        // The script's arithmetic, step by step, against the verdicts it must give.
        let limiter = RateLimiter::new();
        let mut tat_us = 0u64;
        for step in 0..40u64 {
            let now_us = T0 + step * 150 * MS;
            let base = tat_us.max(now_us);
            let conforming = (now_us + tolerance_us)
                .checked_sub(base)
                .map(|h| h / emission_us + 1);
            let verdict = match conforming {
                Some(n) if n >= 1 => {
                    tat_us = base + emission_us;
                    verdict_in_micros(&q, 1, tat_us, now_us)
                }
                _ => verdict_in_micros(&q, 0, base, now_us),
            };
            let expected = limiter.check("alice", &q, now_us);
            assert_eq!(verdict.is_allowed(), expected.is_allowed(), "step {step}");
            if let (Verdict::Allowed { remaining: a, .. }, Verdict::Allowed { remaining: b, .. }) =
                (verdict, expected)
            {
                assert_eq!(a, b, "step {step}");
            }
        }
    }

    #[test]
    fn limited_requests_consume_nothing() {
        // 1 per 10 s, burst 2.
        let q = quota(1, 10, 2);
        let hammered = RateLimiter::new();
        let quiet = RateLimiter::new();
        for limiter in [&hammered, &quiet] {
            assert_eq!(limiter.check("alice", &q, T0), allowed(2, 1, 10));
            assert_eq!(limiter.check("alice", &q, T0), allowed(2, 0, 20));
        }
        for i in 0..1000 {
            let verdict = hammered.check("alice", &q, T0 + i * 10 * MS);
            assert!(!verdict.is_allowed());
        }
        assert_eq!(hammered.check("alice", &q, T0 + 9 * S), limited(2, 1, 11));
        for limiter in [&hammered, &quiet] {
            assert_eq!(limiter.check("alice", &q, T0 + 10 * S), allowed(2, 0, 20));
        }
    }

    #[test]
    fn customers_are_independent() {
        let q = quota(1, 60, 1);
        let limiter = RateLimiter::new();
        assert!(limiter.check("alice", &q, T0).is_allowed());
        assert_eq!(limiter.check("alice", &q, T0), limited(1, 60, 60));
        assert_eq!(limiter.check("bob", &q, T0), allowed(1, 0, 60));
        assert_eq!(limiter.check("bob", &q, T0), limited(1, 60, 60));
        assert_eq!(limiter.len(), 2);
    }

    /// A small deterministic generator, so the eviction test needs no crate.
    fn next(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    }

    #[test]
    fn eviction_keeps_behaviour_identical() {
        let q = quota(5, 1, 3);
        let sweeping = RateLimiter::with_sweep_threshold(1);
        let keeping = RateLimiter::with_sweep_threshold(usize::MAX);
        let mut state = 42;
        let mut now = T0;
        for _ in 0..20_000 {
            now += next(&mut state) % (20 * MS);
            let customer = format!("c{}", next(&mut state) % 200);
            assert_eq!(
                sweeping.check(&customer, &q, now),
                keeping.check(&customer, &q, now)
            );
        }
        assert_eq!(keeping.len(), 200);
        assert!(sweeping.len() < 200, "held {}", sweeping.len());
        let held = sweeping.len();
        assert_eq!(sweeping.evict_expired(now + 2 * S), held);
        assert!(sweeping.is_empty());
    }

    #[test]
    fn memory_stays_bounded_as_customers_come_and_go() {
        let q = quota(1, 1, 1);
        let limiter = RateLimiter::with_sweep_threshold(8);
        let mut most_held = 0;
        for i in 0..100_000u64 {
            // A new customer every 10 ms, each idle after one request: 100 hold a future TAT.
            limiter.check(&format!("c{i}"), &q, T0 + i * 10 * MS);
            most_held = most_held.max(limiter.len());
        }
        assert!(most_held <= 2 * 100 + 16 * 8, "held {most_held}");
    }

    #[test]
    fn threads_share_one_bucket_exactly() {
        let q = Arc::new(quota(1, 3600, 50));
        let limiter = Arc::new(RateLimiter::new());
        let admitted = Arc::new(AtomicU32::new(0));
        let workers: Vec<_> = (0..8)
            .map(|_| {
                let (q, limiter, admitted) = (q.clone(), limiter.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        if limiter.check("alice", &q, T0).is_allowed() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::Relaxed), 50);
    }

    fn quota_settings(requests: u32, period_s: u32, burst: u32) -> QuotaSettings {
        QuotaSettings {
            requests,
            period_s,
            burst,
        }
    }

    #[test]
    fn a_quota_compiles_to_its_gcra_constants() {
        let retail = Quota::new("retail", &quota_settings(100, 60, 20), "p").unwrap();
        assert_eq!(retail.name(), "retail");
        assert_eq!(
            (retail.requests(), retail.period_s(), retail.burst()),
            (100, 60, 20)
        );
        assert_eq!(retail.emission_ns(), 600_000_000);
        assert_eq!(retail.tolerance_ns(), 19 * 600_000_000);
        let hnw = Quota::new("hnw", &quota_settings(10, 1, 1), "p").unwrap();
        assert_eq!(hnw.emission_ns(), 100_000_000);
        assert_eq!(hnw.tolerance_ns(), 0);
    }

    #[test]
    fn quota_errors_are_all_reported_under_their_path() {
        let zero = Quota::new(
            "retail",
            &quota_settings(0, 0, 0),
            "tiers.retail.rate_limit",
        );
        assert_eq!(
            zero.unwrap_err(),
            [
                "tiers.retail.rate_limit.requests: must be > 0",
                "tiers.retail.rate_limit.period_s: must be > 0",
                "tiers.retail.rate_limit.burst: must be >= 1",
            ]
        );
        let huge = quota_settings(1, 4294967295, 4294967295);
        assert_eq!(
            Quota::new("corporate", &huge, "tiers.corporate.rate_limit").unwrap_err(),
            [
                "tiers.corporate.rate_limit.burst: burst * period_s / requests is too long \
              (over 584 years)"
            ]
        );
    }

    #[test]
    fn settings_reject_unknown_fields_and_unprintable_names() {
        let unknown = r#"{"requests": 1, "period_s": 1, "burst": 1, "rate": 2}"#;
        let error = serde_json::from_str::<QuotaSettings>(unknown).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `rate`"),
            "{error}"
        );
        let errors = Quota::new("ré", &quota_settings(1, 1, 1), "tiers.ré.rate_limit");
        assert_eq!(
            errors.unwrap_err(),
            [
                "tiers.ré.rate_limit: a tier name must be non-empty printable ASCII \
              (it names the RateLimit policy)"
            ]
        );
    }

    #[test]
    fn header_fields_follow_the_draft() {
        let q = quota(100, 60, 3);
        assert_eq!(policy_field(&q).to_string(), r#""retail";q=100;w=60"#);
        let limiter = RateLimiter::new();
        let first = limiter.check("alice", &q, T0);
        assert_eq!(
            ratelimit_field(&q, &first).to_string(),
            r#""retail";r=2;t=1"#
        );
        assert_eq!(retry_after_field(&first), None);
        limiter.check("alice", &q, T0);
        let third = limiter.check("alice", &q, T0);
        assert_eq!(
            ratelimit_field(&q, &third).to_string(),
            r#""retail";r=0;t=2"#
        );
        let fourth = limiter.check("alice", &q, T0);
        assert_eq!(fourth, limited(3, 1, 2));
        assert_eq!(
            ratelimit_field(&q, &fourth).to_string(),
            r#""retail";r=0;t=1"#
        );
        assert_eq!(retry_after_field(&fourth), Some(1));
    }

    #[test]
    fn policy_names_are_escaped_as_sf_strings() {
        let settings = QuotaSettings {
            requests: 1,
            period_s: 1,
            burst: 1,
        };
        let q = Quota::new(r#"a"b\c"#, &settings, "tiers.x.rate_limit").unwrap();
        assert_eq!(policy_field(&q).to_string(), r#""a\"b\\c";q=1;w=1"#);
    }
}
