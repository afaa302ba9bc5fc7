//! Revoked tokens, by `jti` and by customer ("every token issued before T"), changed at run time.
//!
//! This is the in-process `RevocationStore` (one worker's own; `state::ZoneRevocations` is the
//! node's). Readers take a snapshot without locking (arc-swap); a change copies the small set and
//! swaps it in, so the request path never waits for an operator.

use super::verifier::Verified;
use crate::reason::{Reason, Refusal};
use crate::state::{RevocationStore, Scope};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default, Clone)]
struct RevokedSet {
    /// `jti` -> the second after which the entry may be forgotten (the token has expired by then).
    by_jti: HashMap<Box<str>, u64>,
    /// customer -> tokens issued before this second are revoked.
    customers: HashMap<Box<str>, f64>,
}

/// The refusal of a token whose `jti` is revoked.
pub(crate) fn revoked_token(jti: &str) -> Refusal {
    Refusal::new(Reason::TokenRevoked, format!("token {jti:?} is revoked"))
}

/// Refuses `verified` when it was issued before its customer's cut-off `before` (or says no
/// `iat`).
pub(crate) fn check_cutoff(verified: &Verified, before: f64) -> Result<(), Refusal> {
    match verified.issued_at_s {
        Some(iat) if iat >= before => Ok(()),
        Some(iat) => Err(Refusal::new(
            Reason::TokenRevoked,
            format!("tokens of this customer issued before {before} are revoked (iat {iat})"),
        )),
        None => Err(Refusal::new(
            Reason::TokenRevoked,
            format!("tokens of this customer issued before {before} are revoked, and this one has no iat"),
        )),
    }
}

/// The second after which a cut-off at `issued_before_s` refuses nothing: no token issued
/// before it is still valid. u64::MAX without a maximum token lifetime.
pub(crate) fn cutoff_forget_after_s(
    issued_before_s: f64,
    max_token_lifetime_s: Option<u64>,
) -> u64 {
    match max_token_lifetime_s {
        Some(lifetime_s) if issued_before_s.is_finite() => {
            (issued_before_s.max(0.0).ceil() as u64).saturating_add(lifetime_s)
        }
        _ => u64::MAX,
    }
}

/// The revocation list a verifier consults for every request, cached tokens included.
#[derive(Default)]
pub struct Revocations {
    current: ArcSwap<RevokedSet>,
    writer: Mutex<()>,
    max_token_lifetime_s: Option<u64>,
}

/// How many entries the revocation list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationCounts {
    pub tokens: usize,
    pub customers: usize,
}

impl Revocations {
    /// Refuses `verified` when its `jti` is revoked, or its customer's tokens issued before some
    /// time are and it was issued earlier (a token without `iat` cannot prove it is newer).
    pub fn check(&self, verified: &Verified) -> Result<(), Refusal> {
        let set = self.current.load();
        if set.by_jti.is_empty() && set.customers.is_empty() {
            return Ok(());
        }
        if let Some(jti) = &verified.jti {
            if set.by_jti.contains_key(&**jti) {
                return Err(revoked_token(jti));
            }
        }
        if let Some(&before) = set.customers.get(&*verified.customer) {
            check_cutoff(verified, before)?;
        }
        Ok(())
    }

    /// An empty list whose customer cut-offs are forgotten `max_token_lifetime_s` after their
    /// time (none: kept until lifted).
    pub fn with_max_token_lifetime(max_token_lifetime_s: Option<u64>) -> Self {
        Revocations {
            max_token_lifetime_s,
            ..Self::default()
        }
    }

    fn change(&self, now_s: u64, edit: impl FnOnce(&mut RevokedSet)) {
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = RevokedSet::clone(&self.current.load());
        next.by_jti.retain(|_, forget_after| *forget_after > now_s);
        let lifetime_s = self.max_token_lifetime_s;
        next.customers
            .retain(|_, before| cutoff_forget_after_s(*before, lifetime_s) > now_s);
        edit(&mut next);
        self.current.store(Arc::new(next));
    }

    /// Revokes the token with `jti`; the entry is dropped after `forget_after_s`, when the token
    /// has expired anyway.
    pub fn revoke_token(&self, jti: &str, forget_after_s: u64, now_s: u64) {
        self.change(now_s, |set| {
            let forget = set.by_jti.entry(jti.into()).or_insert(forget_after_s);
            *forget = (*forget).max(forget_after_s);
        });
    }

    /// Revokes every token of `customer` issued before `issued_before_s`.
    pub fn revoke_customer(&self, customer: &str, issued_before_s: f64, now_s: u64) {
        self.change(now_s, |set| {
            // The later cut-off stands, as on every other node (lift first to move it back).
            let before = set
                .customers
                .entry(customer.into())
                .or_insert(issued_before_s);
            *before = before.max(issued_before_s);
        });
    }

    /// Lifts a customer's revocation; says whether there was one.
    pub fn lift_customer(&self, customer: &str, now_s: u64) -> bool {
        let mut lifted = false;
        self.change(now_s, |set| {
            lifted = set.customers.remove(customer).is_some()
        });
        lifted
    }

    /// How many tokens and customers are revoked.
    pub fn counts(&self) -> RevocationCounts {
        let set = self.current.load();
        RevocationCounts {
            tokens: set.by_jti.len(),
            customers: set.customers.len(),
        }
    }
}

impl RevocationStore for Revocations {
    fn check(&self, verified: &Verified) -> Result<(), Refusal> {
        Revocations::check(self, verified)
    }
    fn revoke_token(&self, jti: &str, forget_after_s: u64, now_s: u64) {
        Revocations::revoke_token(self, jti, forget_after_s, now_s)
    }
    fn revoke_customer(&self, customer: &str, issued_before_s: f64, now_s: u64) {
        Revocations::revoke_customer(self, customer, issued_before_s, now_s)
    }
    fn lift_customer(&self, customer: &str, now_s: u64) -> bool {
        Revocations::lift_customer(self, customer, now_s)
    }
    fn counts(&self) -> RevocationCounts {
        Revocations::counts(self)
    }
    fn scope(&self) -> Scope {
        Scope::Worker
    }
}
