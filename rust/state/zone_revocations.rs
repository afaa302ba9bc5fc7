//! The node's revocation set in the zone: revoked tokens by jti key, customer cut-offs by
//! customer key, each with the second after which it refuses nothing and may be dropped.

use super::zone::{key_of, Table, Zone, H_REVOKED_EVER};
use super::{RevocationStore, Scope};
use crate::auth::revocations::{check_cutoff, cutoff_forget_after_s, revoked_token};
use crate::auth::{RevocationCounts, Verified};
use crate::reason::Refusal;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// The revocation set every worker of the node shares.
pub struct ZoneRevocations {
    zone: Arc<Zone>,
    max_token_lifetime_s: Option<u64>,
}

impl ZoneRevocations {
    /// The set in `zone`; cut-offs are dropped `max_token_lifetime_s` after their time.
    pub fn new(zone: Arc<Zone>, max_token_lifetime_s: Option<u64>) -> Self {
        ZoneRevocations {
            zone,
            max_token_lifetime_s,
        }
    }
}

impl RevocationStore for ZoneRevocations {
    fn check(&self, verified: &Verified) -> Result<(), Refusal> {
        if self.zone.word(H_REVOKED_EVER).load(SeqCst) == 0 {
            return Ok(());
        }
        if let (Some(jti), Some(key)) = (&verified.jti, verified.jti_key) {
            if self.zone.find(Table::Tokens, key.words()).is_some() {
                return Err(revoked_token(jti));
            }
        }
        if let Some((_, before_bits, _)) = self
            .zone
            .find(Table::Cutoffs, verified.customer_key.words())
        {
            check_cutoff(verified, f64::from_bits(before_bits))?;
        }
        Ok(())
    }

    fn revoke_token(&self, jti: &str, forget_after_s: u64, now_s: u64) {
        let key = key_of(jti);
        let guard = self.zone.lock();
        self.zone.word(H_REVOKED_EVER).store(1, SeqCst);
        let forget_after_s = match self.zone.find(Table::Tokens, key) {
            Some((_, known_s, _)) => forget_after_s.max(known_s),
            None => forget_after_s,
        };
        // A full window drops the entry that expires soonest.
        let (slot, _) = self.zone.place(
            &guard,
            Table::Tokens,
            key,
            |forget_after_s, _| forget_after_s <= now_s,
            |forget_after_s, _| forget_after_s,
        );
        self.zone
            .write(&guard, Table::Tokens, slot, key, forget_after_s, 0);
    }

    fn revoke_customer(&self, customer: &str, issued_before_s: f64, now_s: u64) {
        let key = key_of(customer);
        let guard = self.zone.lock();
        // The later cut-off stands, as on every other node (lift first to move it back).
        let issued_before_s = match self.zone.find(Table::Cutoffs, key) {
            Some((_, before_bits, _)) => issued_before_s.max(f64::from_bits(before_bits)),
            None => issued_before_s,
        };
        let forget_after_s = cutoff_forget_after_s(issued_before_s, self.max_token_lifetime_s);
        self.zone.word(H_REVOKED_EVER).store(1, SeqCst);
        let (slot, _) = self.zone.place(
            &guard,
            Table::Cutoffs,
            key,
            |_, forget_after_s| forget_after_s <= now_s,
            |_, forget_after_s| forget_after_s,
        );
        self.zone.write(
            &guard,
            Table::Cutoffs,
            slot,
            key,
            issued_before_s.to_bits(),
            forget_after_s,
        );
    }

    fn lift_customer(&self, customer: &str, _now_s: u64) -> bool {
        let key = key_of(customer);
        let guard = self.zone.lock();
        match self.zone.find(Table::Cutoffs, key) {
            Some((slot, _, _)) => {
                self.zone.clear(&guard, Table::Cutoffs, slot);
                true
            }
            None => false,
        }
    }

    fn counts(&self) -> RevocationCounts {
        RevocationCounts {
            tokens: self.zone.occupied(Table::Tokens).count(),
            customers: self.zone.occupied(Table::Cutoffs).count(),
        }
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }
}
