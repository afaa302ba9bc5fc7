//! One suite of behaviour tests that every implementation of the state traits must pass: the
//! in-process stores and the zone's (two mappings of one zone file, as two workers have).

use super::*;
use crate::auth::StepUpProof;
use crate::ratelimit::QuotaSettings;
use crate::reason::Reason;
use std::sync::atomic::{AtomicU32, Ordering};

pub(super) const S: u64 = 1_000_000;
pub(super) const T0: u64 = 1_700_000_000 * S;

pub(super) fn quota(requests: u32, period_s: u32, burst: u32) -> Quota {
    let settings = QuotaSettings {
        requests,
        period_s,
        burst,
    };
    Quota::new("retail", &settings, "tiers.retail.rate_limit").unwrap()
}

pub(super) fn token(customer: &str, jti: Option<&str>, iat: Option<f64>) -> Verified {
    Verified {
        customer: customer.into(),
        customer_key: StateKey::of(customer),
        cache_until_s: u64::MAX,
        jti: jti.map(Into::into),
        jti_key: jti.map(StateKey::of),
        issued_at_s: iat,
        step_up: StepUpProof::default(),
    }
}

fn refused(store: &dyn RevocationStore, verified: &Verified) -> bool {
    match store.check(verified) {
        Ok(()) => false,
        Err(refusal) => {
            assert_eq!(refusal.reason, Reason::TokenRevoked);
            true
        }
    }
}

/// Revocations as every store must keep them; `other` is another handle on the same state (the
/// same store in-process, another mapping of the zone, another node sharing Redis), which must
/// see every change once `settle` returns (at once for the node's stores; Redis's have 100 ms).
pub(super) fn revocation_behaviour(
    store: &dyn RevocationStore,
    other: &dyn RevocationStore,
    settle: &dyn Fn(),
) {
    let now_s = 1_000;
    let alice = token("alice", Some("t-1"), Some(500.0));
    assert!(!refused(other, &alice));
    store.revoke_token("t-1", 2_000, now_s);
    settle();
    assert!(refused(store, &alice) && refused(other, &alice));
    assert!(!refused(other, &token("alice", Some("t-2"), Some(500.0))));
    assert_eq!(other.counts().tokens, 1);
    // Revoking again changes nothing.
    other.revoke_token("t-1", 2_000, now_s);
    settle();
    assert_eq!(store.counts().tokens, 1);

    other.revoke_customer("bob", 600.0, now_s);
    settle();
    assert!(refused(store, &token("bob", None, Some(599.0))));
    assert!(refused(store, &token("bob", None, None)), "no iat");
    assert!(!refused(store, &token("bob", None, Some(600.0))));
    assert!(!refused(store, &token("carol", None, Some(1.0))));
    assert_eq!(store.counts().customers, 1);
    // A later cut-off replaces the earlier one; an earlier one moves nothing back, on either
    // handle (every node keeps the later one).
    store.revoke_customer("bob", 700.0, now_s);
    settle();
    assert!(refused(other, &token("bob", None, Some(650.0))));
    assert_eq!(other.counts().customers, 1);
    store.revoke_customer("bob", 650.0, now_s);
    settle();
    assert!(refused(store, &token("bob", None, Some(680.0))));
    assert!(refused(other, &token("bob", None, Some(680.0))));
    assert!(store.lift_customer("bob", now_s));
    settle();
    assert!(!other.lift_customer("bob", now_s));
    assert!(!refused(other, &token("bob", None, Some(1.0))));
    assert_eq!(other.counts().customers, 0);
    // Many revocations, all held.
    for i in 0..200 {
        store.revoke_token(&format!("many-{i}"), 5_000, now_s);
    }
    settle();
    for i in 0..200 {
        assert!(refused(
            other,
            &token("x", Some(&format!("many-{i}")), None)
        ));
    }
}

/// GCRA as every store must keep it, `other` being another handle on the same state.
pub(super) fn quota_behaviour(store: &dyn QuotaStore, other: &dyn QuotaStore) {
    let q = quota(60, 60, 5);
    for _ in 0..3 {
        assert!(store.check(Customer::new("alice"), &q, T0).is_allowed());
    }
    assert_eq!(
        other.peek(Customer::new("alice"), &q, T0),
        store.peek(Customer::new("alice"), &q, T0)
    );
    for _ in 0..2 {
        assert!(other.check(Customer::new("alice"), &q, T0).is_allowed());
    }
    assert!(!store.check(Customer::new("alice"), &q, T0).is_allowed());
    assert!(!other.check(Customer::new("alice"), &q, T0).is_allowed());
    // One interval later, exactly one more.
    assert!(other.check(Customer::new("alice"), &q, T0 + S).is_allowed());
    assert!(!store.check(Customer::new("alice"), &q, T0 + S).is_allowed());
    // Another customer has its own bucket; a full bucket is a new customer.
    assert!(store.check(Customer::new("bob"), &q, T0).is_allowed());
    assert_eq!(
        store.check(Customer::new("alice"), &q, T0 + 600 * S),
        other.check(Customer::new("carol"), &q, T0 + 600 * S)
    );
    // Threads on both handles share one bucket exactly.
    let q = quota(1, 3600, 50);
    let admitted = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (admitted, q) = (&admitted, &q);
            let handle = if i % 2 == 0 { store } else { other };
            scope.spawn(move || {
                for _ in 0..100 {
                    if handle.check(Customer::new("dave"), q, T0).is_allowed() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 50);
}

#[test]
fn the_in_process_stores_pass_the_suite() {
    let revocations = Revocations::default();
    revocation_behaviour(&revocations, &revocations, &|| {});
    let limiter = RateLimiter::new();
    quota_behaviour(&limiter, &limiter);
}

fn zone_path(name: &str) -> String {
    let dir = std::env::temp_dir();
    format!(
        "{}/cellgate-suite-{}-{name}.zone",
        dir.display(),
        std::process::id()
    )
}

#[test]
fn the_zone_stores_pass_the_suite() {
    let path = zone_path("suite");
    Zone::create(&path, super::zone::tests::sizes(1024, 1024)).unwrap();
    let (one, two) = (
        Arc::new(Zone::open(&path).unwrap()),
        Arc::new(Zone::open(&path).unwrap()),
    );
    revocation_behaviour(
        &ZoneRevocations::new(one.clone(), None),
        &ZoneRevocations::new(two.clone(), None),
        &|| {},
    );
    quota_behaviour(&ZoneQuotas::new(one), &ZoneQuotas::new(two));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn cutoffs_are_forgotten_once_no_token_before_them_can_be_valid() {
    let path = zone_path("cutoffs");
    // Eight slots: one window, so the zone's table is full after eight customers.
    Zone::create(&path, super::zone::tests::sizes(8, 8)).unwrap();
    let zone = Arc::new(Zone::open(&path).unwrap());
    let stores: [&dyn RevocationStore; 2] = [
        &Revocations::with_max_token_lifetime(Some(100)),
        &ZoneRevocations::new(zone.clone(), Some(100)),
    ];
    for store in stores {
        store.revoke_customer("bob", 1_000.0, 1_000);
        store.revoke_customer("eve", 1_000.0, 1_050);
        assert!(refused(store, &token("bob", None, Some(999.0))));
        // At 1_100 no token issued before 1_000 is valid: a change drops (or reuses) the slot.
        for i in 0..8 {
            store.revoke_customer(&format!("c{i}"), 1_200.0, 1_101);
        }
        assert_eq!(store.counts().customers, 8, "bob and eve gave way");
        assert!(!refused(store, &token("bob", None, Some(999.0))));
        assert!(refused(store, &token("c7", None, Some(1_199.0))));
    }
    assert_eq!(
        zone.counters().evicted_cutoffs,
        0,
        "expired entries are not evictions"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_full_zone_evicts_the_soonest_expiring_and_counts_it() {
    let path = zone_path("full");
    Zone::create(&path, super::zone::tests::sizes(8, 8)).unwrap();
    let zone = Arc::new(Zone::open(&path).unwrap());
    let store = ZoneRevocations::new(zone.clone(), None);
    for i in 0..8 {
        store.revoke_token(&format!("t{i}"), 10_000 + i, 1_000);
    }
    assert_eq!(zone.counters().evicted_tokens, 0);
    store.revoke_token("t8", 20_000, 1_000);
    assert_eq!(zone.counters().evicted_tokens, 1);
    assert!(
        !refused(&store, &token("x", Some("t0"), None)),
        "the soonest expiring went"
    );
    for i in 1..9 {
        assert!(refused(&store, &token("x", Some(&format!("t{i}")), None)));
    }
    // An expired entry gives way without counting an eviction.
    store.revoke_token("t9", 20_000, 10_005);
    assert_eq!(zone.counters().evicted_tokens, 1);
    let quotas = ZoneQuotas::new(zone.clone());
    let q = quota(1, 60, 1);
    for i in 0..9 {
        assert!(quotas
            .check(Customer::new(&format!("c{i}")), &q, T0)
            .is_allowed());
    }
    assert_eq!(zone.counters().evicted_quotas, 1);
    // Once the buckets are full again, slots are reused without evicting.
    assert!(quotas
        .check(Customer::new("late"), &q, T0 + 61 * S)
        .is_allowed());
    assert_eq!(zone.counters().evicted_quotas, 1);
    std::fs::remove_file(&path).unwrap();
}

/// Cell load as every store must keep it, `other` being another handle on the same state
/// (another worker): counts and health seen by both at once, slots given back exactly.
fn load_behaviour(store: &dyn LoadStore, other: &dyn LoadStore) {
    assert_eq!((store.in_flight(0), other.in_flight(1)), (0, 0));
    assert!(store.healthy(0) && other.healthy(1));
    store.acquire(0);
    other.acquire(0);
    other.acquire(1);
    assert_eq!((store.in_flight(0), other.in_flight(0)), (2, 2));
    assert_eq!(store.in_flight(1), 1);
    store.release(0);
    assert_eq!(other.in_flight(0), 1);
    other.release(0);
    other.release(1);
    assert_eq!((store.in_flight(0), store.in_flight(1)), (0, 0));
    assert!(store.set_healthy(1, false));
    assert!(!other.healthy(1) && other.healthy(0));
    assert!(!other.set_healthy(1, true));
    assert!(store.healthy(1));
    // A breaker opening said through one handle is seen through the other; the latest stands.
    assert_eq!(other.open_until_us(0), 0);
    store.opened_until(0, T0 + 30 * S);
    assert_eq!(other.open_until_us(0), T0 + 30 * S);
    other.opened_until(0, T0 + 10 * S);
    assert_eq!(
        store.open_until_us(0),
        T0 + 30 * S,
        "an earlier opening does not shorten it"
    );
    other.opened_until(0, T0 + 60 * S);
    assert_eq!(store.open_until_us(0), T0 + 60 * S);
    assert_eq!(store.open_until_us(1), 0);
    // Threads on both handles: every slot taken is given back.
    std::thread::scope(|scope| {
        for i in 0..8 {
            let handle = if i % 2 == 0 { store } else { other };
            scope.spawn(move || {
                for _ in 0..1000 {
                    handle.acquire(2);
                    assert!(handle.in_flight(2) >= 1);
                    handle.release(2);
                }
            });
        }
    });
    assert_eq!(store.in_flight(2), 0);
    // A bounded slot: threads on both handles racing for 2 slots never hold 3 at once.
    assert!(store.try_acquire(2, 1) && !other.try_acquire(2, 1));
    store.release(2);
    let holding = AtomicU32::new(0);
    let most = AtomicU32::new(0);
    let taken = AtomicU32::new(0);
    std::thread::scope(|scope| {
        for i in 0..8 {
            let handle = if i % 2 == 0 { store } else { other };
            let (holding, most, taken) = (&holding, &most, &taken);
            scope.spawn(move || {
                for _ in 0..20_000 {
                    if handle.try_acquire(2, 2) {
                        let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        taken.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                        holding.fetch_sub(1, Ordering::SeqCst);
                        handle.release(2);
                    }
                }
            });
        }
    });
    assert!(most.load(Ordering::SeqCst) <= 2, "{most:?} held at once");
    assert!(taken.load(Ordering::Relaxed) > 0);
    assert_eq!(
        store.in_flight(2),
        0,
        "every refused try gave its slot back"
    );
}

#[test]
fn the_in_process_load_passes_the_suite() {
    let load = InProcessLoad::new(3);
    load_behaviour(&load, &load);
    assert_eq!(load.scope(), Scope::Worker);
}

#[test]
fn the_zone_load_passes_the_suite() {
    let path = zone_path("load");
    Zone::create(&path, super::zone::tests::sizes(8, 8)).unwrap();
    let (one, two) = (
        Arc::new(Zone::open(&path).unwrap()),
        Arc::new(Zone::open(&path).unwrap()),
    );
    let (a, b) = (
        ZoneLoad::new(one, 3).unwrap(),
        ZoneLoad::new(two, 3).unwrap(),
    );
    assert_ne!(a.record(), b.record());
    load_behaviour(&*a, &*b);
    assert_eq!(a.scope(), Scope::Node);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_zone_too_small_for_the_cells_or_the_workers_is_refused() {
    let path = zone_path("load-small");
    Zone::create(&path, super::zone::tests::sizes(8, 8)).unwrap();
    let zone = Arc::new(Zone::open(&path).unwrap());
    let error = ZoneLoad::new(zone.clone(), 5).err().unwrap();
    assert!(error.contains("room for 4 cells"), "{error}");
    let held: Vec<_> = (0..4)
        .map(|_| ZoneLoad::new(zone.clone(), 4).unwrap())
        .collect();
    let error = ZoneLoad::new(zone.clone(), 4).err().unwrap();
    assert!(error.contains("worker records is held"), "{error}");
    // A record dropped is free again.
    drop(held);
    assert!(ZoneLoad::new(zone, 4).is_ok());
    std::fs::remove_file(&path).unwrap();
}

/// Set in the child process of the test below: the zone it holds slots in.
const HOLDER_ZONE: &str = "CELLGATE_TEST_HOLDER_ZONE";

/// Not a test by itself: the child process of `slots_of_a_worker_killed_holding_them_come_back`,
/// which takes 3 slots on cell 1 and waits to be killed.
#[test]
fn hold_slots_until_killed() {
    let Ok(path) = std::env::var(HOLDER_ZONE) else {
        return;
    };
    let load = ZoneLoad::new(Arc::new(Zone::open(&path).unwrap()), 2).unwrap();
    for _ in 0..3 {
        load.acquire(1);
    }
    println!("holding");
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn slots_of_a_worker_killed_holding_them_come_back() {
    use std::io::{BufRead, BufReader};
    let path = zone_path("killed");
    Zone::create(&path, super::zone::tests::sizes(8, 8)).unwrap();
    let zone = Arc::new(Zone::open(&path).unwrap());
    let mine = ZoneLoad::new(zone.clone(), 2).unwrap();
    mine.acquire(1);
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "state::suite::hold_slots_until_killed",
            "--nocapture",
        ])
        .args(["--test-threads", "1"])
        .env(HOLDER_ZONE, &path)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    assert!(stdout.lines().any(|line| line.unwrap().contains("holding")));
    assert_eq!(mine.in_flight(1), 4, "the child's 3 and this worker's 1");
    // SIGKILL: no destructor runs; then reaped, as granian's master reaps its dead workers.
    child.kill().unwrap();
    child.wait().unwrap();
    // Swept here, or by the sweeper thread every second meanwhile.
    sweep(&zone);
    assert_eq!(mine.in_flight(1), 1, "this worker's own slot is kept");
    assert_eq!(zone.counters().reclaimed_slots, 3);
    assert_eq!(zone.counters().reclaimed_workers, 1);
    assert_eq!(sweep(&zone), 0);
    mine.release(1);
    assert_eq!(mine.in_flight(1), 0);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn one_worker_of_a_node_holds_the_probe_lease_until_it_lapses_or_its_holder_dies() {
    use super::zone_load::probe_lease;
    let path = zone_path("probe-lease");
    Zone::create(&path, super::zone::tests::sizes(8, 8)).unwrap();
    let zone = Zone::open(&path).unwrap();
    let me = u64::from(std::process::id());
    // pid 1 is always alive: another worker of the node.
    assert!(probe_lease(&zone, me, 1000, 3));
    assert!(!probe_lease(&zone, 1, 1001, 3), "held and fresh: not taken");
    assert!(probe_lease(&zone, me, 1002, 3), "the holder renews it");
    assert!(!probe_lease(&zone, 1, 1004, 3));
    assert!(
        probe_lease(&zone, 1, 1006, 3),
        "lapsed unrenewed: taken over"
    );
    assert!(!probe_lease(&zone, me, 1007, 3));
    // A holder that is gone frees the lease at once.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = u64::from(child.id());
    child.wait().unwrap();
    assert!(probe_lease(&zone, dead, 2000, 3));
    assert!(probe_lease(&zone, me, 2001, 3), "its holder is gone");
    std::fs::remove_file(&path).unwrap();
}
