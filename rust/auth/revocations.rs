//! Revoked tokens, by `jti` and by customer ("every token issued before T"), changed at run time.
//!
//! Readers take a snapshot without locking (arc-swap); a change copies the small set and swaps it
//! in, so the request path never waits for an operator.

use super::verifier::Verified;
use crate::reason::{Reason, Refusal};
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

/// The revocation list a verifier consults for every request, cached tokens included.
#[derive(Default)]
pub struct Revocations {
    current: ArcSwap<RevokedSet>,
    writer: Mutex<()>,
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
                return Err(Refusal::new(
                    Reason::TokenRevoked,
                    format!("token {jti:?} is revoked"),
                ));
            }
        }
        if let Some(&before) = set.customers.get(&*verified.customer) {
            match verified.issued_at_s {
                Some(iat) if iat >= before => {}
                Some(iat) => {
                    return Err(Refusal::new(
                        Reason::TokenRevoked,
                        format!("tokens of this customer issued before {before} are revoked (iat {iat})"),
                    ))
                }
                None => {
                    return Err(Refusal::new(
                        Reason::TokenRevoked,
                        format!("tokens of this customer issued before {before} are revoked, and this one has no iat"),
                    ))
                }
            }
        }
        Ok(())
    }

    fn change(&self, now_s: u64, edit: impl FnOnce(&mut RevokedSet)) {
        let _guard = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = RevokedSet::clone(&self.current.load());
        next.by_jti.retain(|_, forget_after| *forget_after > now_s);
        edit(&mut next);
        self.current.store(Arc::new(next));
    }

    /// Revokes the token with `jti`; the entry is dropped after `forget_after_s`, when the token
    /// has expired anyway.
    pub fn revoke_token(&self, jti: &str, forget_after_s: u64, now_s: u64) {
        self.change(now_s, |set| {
            set.by_jti.insert(jti.into(), forget_after_s);
        });
    }

    /// Revokes every token of `customer` issued before `issued_before_s`.
    pub fn revoke_customer(&self, customer: &str, issued_before_s: f64, now_s: u64) {
        self.change(now_s, |set| {
            set.customers.insert(customer.into(), issued_before_s);
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
