//! Each customer's GCRA state in the zone: its theoretical arrival time, an `AtomicU64` changed
//! by compare-and-swap, so workers decide one customer's requests as one bucket, lock-free.
//!
//! Only a customer not in the zone takes the writer lock, to claim a slot. A slot whose TAT has
//! passed is free (a full bucket is exactly a customer never seen); a full window drops the
//! customer whose TAT is earliest and counts it.

use super::zone::{Key, Table, Zone};
use super::{Customer, QuotaStore};
use crate::ratelimit::{decide, Quota, Verdict, NS_PER_US};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

/// The GCRA state every worker of the node shares.
pub struct ZoneQuotas {
    zone: Arc<Zone>,
}

impl ZoneQuotas {
    /// The quotas in `zone`.
    pub fn new(zone: Arc<Zone>) -> Self {
        ZoneQuotas { zone }
    }

    /// Decides against the slot holding `key`, retrying the swap while others change it; None
    /// when no slot holds it (or the slot was taken from it meanwhile).
    fn check_held(&self, key: Key, quota: &Quota, now_ns: u64) -> Option<Verdict> {
        let (slot, mut tat_ns, _) = self.zone.find(Table::Quotas, key)?;
        let tat = self.zone.field(Table::Quotas, slot, 2);
        loop {
            let (verdict, new_tat_ns) = decide(tat_ns, quota, now_ns);
            let Some(new_tat_ns) = new_tat_ns else {
                return Some(verdict);
            };
            match tat.compare_exchange(tat_ns, new_tat_ns, SeqCst, SeqCst) {
                Ok(_) => return Some(verdict),
                Err(_) => {
                    // Changed meanwhile: read it again, and make sure the slot is still ours.
                    tat_ns = self.zone.read(Table::Quotas, slot, key)?.0;
                }
            }
        }
    }
}

impl QuotaStore for ZoneQuotas {
    fn check(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict {
        let now_ns = now_us.saturating_mul(NS_PER_US);
        let key = customer.key.words();
        if let Some(verdict) = self.check_held(key, quota, now_ns) {
            return verdict;
        }
        let guard = self.zone.lock();
        // Another worker may have placed the customer while this one waited.
        if let Some(verdict) = self.check_held(key, quota, now_ns) {
            return verdict;
        }
        let (verdict, new_tat_ns) = decide(now_ns, quota, now_ns);
        if let Some(new_tat_ns) = new_tat_ns {
            let (slot, _) = self.zone.place(
                &guard,
                Table::Quotas,
                key,
                |tat_ns, _| tat_ns <= now_ns,
                |tat_ns, _| tat_ns,
            );
            self.zone
                .write(&guard, Table::Quotas, slot, key, new_tat_ns, 0);
        }
        verdict
    }

    fn peek(&self, customer: Customer<'_>, quota: &Quota, now_us: u64) -> Verdict {
        let now_ns = now_us.saturating_mul(NS_PER_US);
        let tat_ns = self
            .zone
            .find(Table::Quotas, customer.key.words())
            .map_or(now_ns, |(_, tat_ns, _)| tat_ns);
        decide(tat_ns, quota, now_ns).0
    }
}
