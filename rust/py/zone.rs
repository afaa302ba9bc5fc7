//! The node's shared-memory zone as Python sees it: `cellgate serve` creates it before the
//! workers start and loads the lasting revocations into it; tests drive it directly.

use crate::ratelimit::{Quota, QuotaSettings};
use crate::state::{
    Customer, LoadStore, QuotaStore, RevocationStore, Zone, ZoneLoad, ZoneQuotas, ZoneRevocations,
    ZoneSizes,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A mapped zone: its revocation set and counters.
#[pyclass(name = "Zone", frozen)]
pub struct PyZone {
    zone: Arc<Zone>,
    revocations: ZoneRevocations,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[pymethods]
impl PyZone {
    /// Creates (or replaces) the zone file at `path`, every slot empty. Raises ValueError.
    #[staticmethod]
    #[pyo3(signature = (
        path, revocation_slots, quota_slots, max_token_lifetime_s=None, cell_slots=64,
        worker_slots=64,
    ))]
    fn create(
        path: &str,
        revocation_slots: u64,
        quota_slots: u64,
        max_token_lifetime_s: Option<u64>,
        cell_slots: u64,
        worker_slots: u64,
    ) -> PyResult<Self> {
        let sizes = ZoneSizes {
            revocation_slots,
            quota_slots,
            cell_slots,
            worker_slots,
        };
        let zone = Zone::create(path, sizes).map_err(PyValueError::new_err)?;
        Ok(Self::of(Arc::new(zone), max_token_lifetime_s))
    }

    /// Maps the zone at `path`; ValueError when it is not a zone of this layout.
    #[new]
    #[pyo3(signature = (path, max_token_lifetime_s=None))]
    fn open(path: &str, max_token_lifetime_s: Option<u64>) -> PyResult<Self> {
        let zone = Zone::open(path).map_err(PyValueError::new_err)?;
        Ok(Self::of(Arc::new(zone), max_token_lifetime_s))
    }

    /// Revokes the token with `jti` on the whole node until `forget_after_s`.
    fn revoke_token(&self, jti: &str, forget_after_s: u64) {
        self.revocations.revoke_token(jti, forget_after_s, now_s());
    }

    /// Revokes every token of `customer_id` issued before `issued_before_s`, on the whole node.
    fn revoke_customer(&self, customer_id: &str, issued_before_s: f64) {
        self.revocations
            .revoke_customer(customer_id, issued_before_s, now_s());
    }

    /// Lifts a customer's revocation; says whether there was one.
    fn lift_customer(&self, customer_id: &str) -> bool {
        self.revocations.lift_customer(customer_id, now_s())
    }

    /// `{"tokens", "customers", "evicted_tokens", "evicted_cutoffs", "evicted_quotas",
    /// "lock_takeovers", "revocation_slots", "quota_slots", "cell_slots", "worker_slots",
    /// "reclaimed_slots", "reclaimed_workers"}`.
    #[getter]
    fn counters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        zone_counters(py, &self.zone, &self.revocations)
    }

    /// Tests only: takes `slots` in-flight slots on cell `cell` as a worker of its own, and
    /// holds them for `seconds` (so that a process killed meanwhile dies holding them).
    fn hold(&self, py: Python<'_>, cell: usize, slots: u32, seconds: f64) -> PyResult<()> {
        let (cells, _) = self.zone.load_sizes();
        if cell >= cells {
            return Err(PyValueError::new_err(format!("no cell {cell}")));
        }
        let load = ZoneLoad::new(self.zone.clone(), cells).map_err(PyValueError::new_err)?;
        py.detach(|| {
            for _ in 0..slots {
                load.acquire(cell);
            }
            std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
            for _ in 0..slots {
                load.release(cell);
            }
        });
        Ok(())
    }

    /// Tests only: decides quota requests and revokes tokens in a tight loop for `seconds`,
    /// many of them new customers (each takes the writer lock), so that a process killed in it
    /// dies at any point of an update. Returns how many requests it decided.
    fn hammer(&self, py: Python<'_>, seconds: f64) -> PyResult<u64> {
        let settings = QuotaSettings {
            requests: 1_000,
            period_s: 1,
            burst: 10,
        };
        let quota = Quota::new("hammer", &settings, "hammer")
            .map_err(|errors| PyValueError::new_err(errors.join("; ")))?;
        let quotas = ZoneQuotas::new(self.zone.clone());
        let until = Instant::now() + Duration::from_secs_f64(seconds.max(0.0));
        let pid = std::process::id();
        py.detach(|| {
            let mut decided = 0u64;
            while Instant::now() < until {
                let now_us = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.as_micros() as u64);
                let customer = format!("hammer-{pid}-{}", decided % 4096);
                quotas.check(Customer::new(&customer), &quota, now_us);
                if decided.is_multiple_of(16) {
                    let jti = format!("hammer-{pid}-{decided}");
                    self.revocations.revoke_token(&jti, now_s() + 1, now_s());
                }
                decided += 1;
            }
            Ok(decided)
        })
    }
}

impl PyZone {
    fn of(zone: Arc<Zone>, max_token_lifetime_s: Option<u64>) -> Self {
        PyZone {
            revocations: ZoneRevocations::new(zone.clone(), max_token_lifetime_s),
            zone,
        }
    }
}

/// The counters of `zone` as a dict (also the router's `state`).
pub fn zone_counters<'py>(
    py: Python<'py>,
    zone: &Zone,
    revocations: &dyn RevocationStore,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    let counts = revocations.counts();
    let counters = zone.counters();
    let (revocation_slots, quota_slots) = zone.sizes();
    d.set_item("zone", zone.path())?;
    d.set_item("tokens", counts.tokens)?;
    d.set_item("customers", counts.customers)?;
    d.set_item("evicted_tokens", counters.evicted_tokens)?;
    d.set_item("evicted_cutoffs", counters.evicted_cutoffs)?;
    d.set_item("evicted_quotas", counters.evicted_quotas)?;
    d.set_item("lock_takeovers", counters.lock_takeovers)?;
    d.set_item("revocation_slots", revocation_slots)?;
    d.set_item("quota_slots", quota_slots)?;
    let (cell_slots, worker_slots) = zone.load_sizes();
    d.set_item("cell_slots", cell_slots)?;
    d.set_item("worker_slots", worker_slots)?;
    d.set_item("reclaimed_slots", counters.reclaimed_slots)?;
    d.set_item("reclaimed_workers", counters.reclaimed_workers)?;
    Ok(d)
}
