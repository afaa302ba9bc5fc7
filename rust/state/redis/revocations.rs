//! Revocations shared across nodes: checked against the node's own store (so a node keeps
//! refusing what it knows while Redis is away), changed there at once and published to the
//! others through the exchange.

use super::exchange::{Exchange, SharedRevocation};
use crate::auth::{RevocationCounts, Verified};
use crate::reason::Refusal;
use crate::state::{RevocationStore, Scope};
use std::sync::Arc;

/// The node's revocation store, kept in step with every other node's.
pub struct RedisRevocations {
    local: Arc<dyn RevocationStore>,
    exchange: Arc<Exchange>,
}

impl RedisRevocations {
    /// `local`, shared through `exchange`.
    pub fn new(local: Arc<dyn RevocationStore>, exchange: Arc<Exchange>) -> Self {
        RedisRevocations { local, exchange }
    }
}

impl RevocationStore for RedisRevocations {
    fn check(&self, verified: &Verified) -> Result<(), Refusal> {
        self.local.check(verified)
    }

    fn revoke_token(&self, jti: &str, forget_after_s: u64, now_s: u64) {
        self.local.revoke_token(jti, forget_after_s, now_s);
        self.exchange.made(SharedRevocation::RevokeToken {
            jti: jti.to_owned(),
            forget_after_s,
        });
    }

    fn revoke_customer(&self, customer: &str, issued_before_s: f64, now_s: u64) {
        self.local.revoke_customer(customer, issued_before_s, now_s);
        self.exchange.made(SharedRevocation::RevokeCustomer {
            customer_id: customer.to_owned(),
            issued_before_s,
        });
    }

    fn lift_customer(&self, customer: &str, now_s: u64) -> bool {
        let lifted = self.local.lift_customer(customer, now_s);
        self.exchange.made(SharedRevocation::LiftCustomer {
            customer_id: customer.to_owned(),
        });
        lifted
    }

    fn counts(&self) -> RevocationCounts {
        self.local.counts()
    }

    fn scope(&self) -> Scope {
        Scope::Cluster
    }
}
