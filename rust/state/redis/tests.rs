//! The Redis stores against a real `redis-server` (Debian's package: `bash
//! scripts/install-test-deps.sh`), each test on its own server on a Unix socket: the shared
//! behaviour suite with two nodes, leases and their bound, what an unreachable Redis does, and
//! breaker openings crossing nodes.

use super::*;
use crate::auth::Revocations;
use crate::clock::Clock;
use crate::ratelimit::RateLimiter;
use crate::ratelimit::Verdict;
use crate::runtime::runtime;
use crate::state::suite::{quota, quota_behaviour, revocation_behaviour, token, S, T0};
use crate::state::Scope;
use crate::state::{Admission, Customer, InProcessLoad};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// A throwaway redis-server on a Unix socket, killed when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn start(name: &str) -> Server {
        let dir =
            std::env::temp_dir().join(format!("cellgate-redis-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Server {
            child: spawn(&dir),
            dir,
        };
        server.answering();
        server
    }

    /// Kills the server: Redis is gone, and everything it held with it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same socket, empty.
    fn restart(&mut self) {
        self.child = spawn(&self.dir);
        self.answering();
    }

    fn answering(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ping = redis::Client::open(self.url().as_str())
                .and_then(|client| client.get_connection())
                .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
            if ping.is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer in {}", self.dir.display());
    }

    fn url(&self) -> String {
        format!("redis+unix://{}", self.dir.join("redis.sock").display())
    }
}

/// A redis-server that keeps nothing on disk, on a Unix socket in `dir`.
fn spawn(dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(dir.join("redis.sock"))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server: install it with `bash scripts/install-test-deps.sh`")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn settings(url: &str) -> RedisSettings {
    serde_json::from_value(serde_json::json!({ "url": url })).unwrap()
}

/// Settings that try Redis again 100 ms after losing it, for tests that take it away.
fn retrying_fast(url: &str) -> RedisSettings {
    RedisSettings {
        retry_ms: 100,
        ..settings(url)
    }
}

/// A node: in-process stores shared through Redis, on a manual clock.
fn node(settings: &RedisSettings, clock: &Clock) -> Cluster {
    node_with_lifetime(settings, clock, None)
}

fn node_with_lifetime(settings: &RedisSettings, clock: &Clock, lifetime_s: Option<u64>) -> Cluster {
    let local = Local {
        revocations: Arc::new(Revocations::default()),
        quotas: Box::new(RateLimiter::new()),
        load: Arc::new(InProcessLoad::new(3)),
        cell_ids: vec!["a".into(), "b".into(), "c".into()],
        clock: clock.clone(),
        max_token_lifetime_s: lifetime_s,
    };
    Cluster::new(settings, local).unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn subscribed(nodes: &[&Cluster]) {
    for node in nodes {
        node.exchange.start();
    }
    wait_until("subscribed", || {
        nodes.iter().all(|n| n.exchange.subscribed())
    });
}

#[test]
fn two_nodes_sharing_redis_pass_the_suite() {
    let server = Server::start("suite");
    let clock = Clock::manual(1_000 * S);
    let (a, b) = (
        node(&settings(&server.url()), &clock),
        node(&settings(&server.url()), &clock),
    );
    subscribed(&[&a, &b]);
    // A change must reach the other node within 100 ms.
    let settle = || std::thread::sleep(Duration::from_millis(100));
    revocation_behaviour(&*a.revocations, &*b.revocations, &settle);
    quota_behaviour(&*a.quotas, &*b.quotas);
    assert_eq!(a.revocations.scope(), Scope::Cluster);
    // What the other node heard is handed to its log.
    let heard = b.exchange.take_heard();
    assert!(heard.contains(&SharedRevocation::RevokeToken {
        jti: "many-7".into(),
        forget_after_s: 5_000
    }));
    assert!(heard.contains(&SharedRevocation::LiftCustomer {
        customer_id: "bob".into()
    }));
    assert!(b.exchange.take_heard().is_empty());
}

#[test]
fn a_redis_restarted_empty_gets_back_every_revocation_and_one_made_meanwhile_reaches_the_others() {
    let mut server = Server::start("restart");
    let clock = Clock::manual(1_000 * S);
    let fast = retrying_fast(&server.url());
    let (a, b) = (node(&fast, &clock), node(&fast, &clock));
    subscribed(&[&a, &b]);
    a.revocations.revoke_token("before", 9_000, 1_000);
    wait_until("before reaches b", || {
        b.revocations
            .check(&token("x", Some("before"), None))
            .is_err()
    });

    server.kill();
    wait_until("both see Redis gone", || {
        !a.exchange.subscribed() && !b.exchange.subscribed()
    });
    a.revocations.revoke_token("meanwhile", 9_000, 1_000);
    // Static stability: each node still refuses what it knows.
    assert!(b
        .revocations
        .check(&token("x", Some("before"), None))
        .is_err());

    server.restart();
    wait_until("meanwhile reaches b", || {
        b.revocations
            .check(&token("x", Some("meanwhile"), None))
            .is_err()
    });
    let client = redis::Client::open(server.url().as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    wait_until("Redis holds both again", || {
        redis::cmd("ZCARD")
            .arg("cellgate:revoked:tokens")
            .query::<u64>(&mut con)
            .unwrap_or(0)
            == 2
    });
}

/// Runs one command on `server` as its default user.
fn command(server: &Server, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(server.url().as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut con).unwrap()
}

fn cutoff_in_redis(server: &Server, customer: &str) -> bool {
    let held = command(server, &["HEXISTS", "cellgate:revoked:customers", customer]);
    held == redis::Value::Int(1)
}

#[test]
fn a_lift_made_while_a_node_was_cut_off_is_neither_undone_by_it_nor_missed() {
    let server = Server::start("lift-cut-off");
    // Node a connects as a user of its own, so that it alone can be cut off.
    command(
        &server,
        &[
            "ACL",
            "SETUSER",
            "a",
            "on",
            ">a-secret",
            "~*",
            "&*",
            "+@all",
        ],
    );
    let clock = Clock::manual(1_000 * S);
    let fast = retrying_fast(&server.url());
    let mut as_a = fast.clone();
    as_a.url = format!("{}?user=a&pass=a-secret", server.url());
    let (a, b) = (node(&as_a, &clock), node(&fast, &clock));
    subscribed(&[&a, &b]);
    let old = token("carol", None, Some(800.0));
    a.revocations.revoke_customer("carol", 900.0, 1_000);
    wait_until("the cut-off reaches b", || {
        b.revocations.check(&old).is_err()
    });

    command(&server, &["ACL", "SETUSER", "a", "off"]);
    command(&server, &["CLIENT", "KILL", "USER", "a"]);
    wait_until("a is cut off", || !a.exchange.subscribed());
    assert!(b.revocations.lift_customer("carol", 1_000));
    wait_until("the lift reaches Redis", || {
        !cutoff_in_redis(&server, "carol")
    });
    assert!(a.revocations.check(&old).is_err(), "a did not hear it");

    command(&server, &["ACL", "SETUSER", "a", "on"]);
    wait_until("a is back", || a.exchange.subscribed());
    // a wrote back what it knew and reloaded: the lifted cut-off stays lifted everywhere.
    assert!(
        !cutoff_in_redis(&server, "carol"),
        "a wrote the lifted cut-off back"
    );
    wait_until("a learns the lift", || a.revocations.check(&old).is_ok());
    assert!(b.revocations.check(&old).is_ok());
    assert!(a
        .exchange
        .take_heard()
        .contains(&SharedRevocation::LiftCustomer {
            customer_id: "carol".into()
        }));
    // A cut-off made after the lift, even an earlier one, stands on every node.
    b.revocations.revoke_customer("carol", 850.0, 1_000);
    wait_until("the new cut-off reaches a", || {
        a.revocations.check(&old).is_err()
    });
    assert!(cutoff_in_redis(&server, "carol"));
}

#[test]
fn a_lift_made_while_redis_was_away_and_came_back_empty_is_not_undone_by_a_write_back() {
    let mut server = Server::start("lift-while-away");
    let clock = Clock::manual(1_000 * S);
    let fast = retrying_fast(&server.url());
    let (a, b) = (node(&fast, &clock), node(&fast, &clock));
    subscribed(&[&a, &b]);
    let old = token("dan", None, Some(800.0));
    a.revocations.revoke_customer("dan", 900.0, 1_000);
    wait_until("the cut-off reaches b", || {
        b.revocations.check(&old).is_err()
    });
    server.kill();
    wait_until("both see Redis gone", || {
        !a.exchange.subscribed() && !b.exchange.subscribed()
    });
    assert!(b.revocations.lift_customer("dan", 1_000));
    server.restart();
    wait_until("both are back", || {
        a.exchange.subscribed() && b.exchange.subscribed()
    });
    // However the two sessions interleave, the lift b made stands on both nodes.
    wait_until("a learns the lift", || a.revocations.check(&old).is_ok());
    std::thread::sleep(Duration::from_millis(300));
    assert!(a.revocations.check(&old).is_ok() && b.revocations.check(&old).is_ok());
    assert!(!cutoff_in_redis(&server, "dan"));
}

#[test]
fn a_storm_of_resyncs_is_answered_by_a_few_reloads_that_still_find_what_was_written() {
    let server = Server::start("resync-storm");
    let clock = Clock::manual(1_000 * S);
    let b = node(&settings(&server.url()), &clock);
    subscribed(&[&b]);
    // What a node wrote back while resyncing, and then its ask (and a hundred others' at once).
    command(
        &server,
        &["ZADD", "cellgate:revoked:tokens", "9000", "written-back"],
    );
    for n in 0..100 {
        let resync = format!(r#"{{"node": "storm-{n}", "op": "resync"}}"#);
        command(&server, &["PUBLISH", "cellgate:events", &resync]);
    }
    let revoked = token("x", Some("written-back"), None);
    wait_until("the reload finds it", || {
        b.revocations.check(&revoked).is_err()
    });
    std::thread::sleep(Duration::from_millis(300));
    let reloads = b.exchange.link.counters.reloads.load(Relaxed);
    assert!(
        (1..=3).contains(&reloads),
        "{reloads} reloads for 100 resyncs"
    );
}

#[test]
fn what_refuses_nothing_any_more_leaves_redis_while_a_session_lasts() {
    let server = Server::start("housekeeping");
    let clock = Clock::manual(1_000 * S);
    let a = node_with_lifetime(&settings(&server.url()), &clock, Some(600));
    subscribed(&[&a]);
    a.revocations.revoke_token("short", 2_000, 1_000);
    a.revocations.revoke_token("long", 9_000, 1_000);
    a.revocations.revoke_customer("old", 1_000.0, 1_000);
    a.revocations.revoke_customer("new", 2_500.0, 1_000);
    let client = redis::Client::open(server.url().as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let counts = |con: &mut redis::Connection| -> (u64, u64) {
        let tokens = redis::cmd("ZCARD")
            .arg("cellgate:revoked:tokens")
            .query(con)
            .unwrap();
        let cutoffs = redis::cmd("HLEN")
            .arg("cellgate:revoked:customers")
            .query(con)
            .unwrap();
        (tokens, cutoffs)
    };
    a.revocations.revoke_customer("lifted-old", 1_000.0, 1_000);
    a.revocations.revoke_customer("lifted-new", 2_500.0, 1_000);
    assert!(a.revocations.lift_customer("lifted-old", 1_000));
    assert!(a.revocations.lift_customer("lifted-new", 1_000));
    let lifted = |con: &mut redis::Connection| -> u64 {
        redis::cmd("HLEN")
            .arg("cellgate:revoked:lifted")
            .query(con)
            .unwrap()
    };
    wait_until("all four in Redis, and both lifts", || {
        counts(&mut con) == (2, 2) && lifted(&mut con) == 2
    });
    // At 3000 s the short token is past its forget time and the old cut-off (and the old
    // lifted one) past 1000 + 600.
    clock.set_us(3_000 * S);
    let exchange = &a.exchange;
    runtime()
        .block_on(exchange.forget_expired(&mut exchange.link.bulk_connection()))
        .unwrap();
    assert_eq!(counts(&mut con), (1, 1));
    assert_eq!(lifted(&mut con), 1);
}

#[test]
fn a_lease_spends_locally_and_admits_at_most_a_lease_per_node_beyond_the_exact_rule() {
    let server = Server::start("lease");
    let clock = Clock::manual(T0);
    let mut leased = settings(&server.url());
    leased.quotas = QuotaMode::Leased;
    leased.lease = 5;
    let (a, b) = (node(&leased, &clock), node(&leased, &clock));
    let q = quota(60, 60, 20);
    let alice = Customer::new("alice");
    // The first request takes a lease of 5 from Redis; the next 4 are spent without asking.
    let Admission::Later(first) = a.quotas.admit(alice, &q, T0, true) else {
        panic!("the first request asks Redis");
    };
    // Each answer's RateLimit remaining counts what Redis holds and what the lease holds:
    // 20 less the 1, 2, ... spent.
    let remaining = |verdict: Verdict| match verdict {
        Verdict::Allowed { remaining, .. } => remaining,
        Verdict::Limited { .. } => panic!("limited"),
    };
    assert_eq!(remaining(runtime().block_on(first).unwrap()), 19);
    for spent in 2..=5 {
        let Admission::Now(verdict) = a.quotas.admit(alice, &q, T0, true) else {
            panic!("spent from the lease");
        };
        assert_eq!(remaining(verdict), 20 - spent);
    }
    assert!(matches!(
        a.quotas.admit(alice, &q, T0, true),
        Admission::Later(_)
    ));
    // Over both nodes, a burst admits exactly the burst: leases only move requests earlier.
    let admitted = (0..100)
        .filter(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            node.quotas.check(Customer::new("bob"), &q, T0).is_allowed()
        })
        .count();
    assert_eq!(admitted, 20);
    // A lease taken and left unspent is spent after Redis's bucket refilled: at most
    // lease - 1 requests a node beyond what the exact rule admits at that moment.
    assert!(a.quotas.check(Customer::new("carol"), &q, T0).is_allowed());
    assert!(b.quotas.check(Customer::new("carol"), &q, T0).is_allowed());
    let later = T0 + 30 * S;
    let admitted = (0..100)
        .filter(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            node.quotas
                .check(Customer::new("carol"), &q, later)
                .is_allowed()
        })
        .count();
    // Exact: the 30 s refilled 30 of the 2 taken (a lease of 5 each), so the burst of 20 is
    // back; the 4 each node holds unspent come on top, at most.
    let exact = 20;
    assert!(admitted <= exact + 2 * 4, "{admitted}");
    assert!(admitted >= exact, "{admitted}");
}

#[test]
fn a_customer_redis_found_limited_is_refused_locally_until_its_next_request_conforms() {
    let server = Server::start("limited-locally");
    let clock = Clock::manual(T0);
    let a = node(&settings(&server.url()), &clock);
    let q = quota(60, 60, 2);
    let erin = Customer::new("erin");
    let asked = |now_us: u64| match a.quotas.admit(erin, &q, now_us, true) {
        Admission::Later(later) => runtime().block_on(later).unwrap(),
        Admission::Now(_) | Admission::Refused(_) => panic!("Redis is asked"),
    };
    assert!(asked(T0).is_allowed() && asked(T0).is_allowed());
    let Verdict::Limited { retry_after_s, .. } = asked(T0) else {
        panic!("the burst of 2 is spent");
    };
    assert_eq!(retry_after_s, 1);
    // Until 1 s has passed, Redis would refuse: the worker does, without asking.
    for now_us in [T0, T0 + S / 2, T0 + S - 1] {
        let Admission::Now(Verdict::Limited { retry_after_s, .. }) =
            a.quotas.admit(erin, &q, now_us, true)
        else {
            panic!("refused locally at {now_us}");
        };
        assert_eq!(retry_after_s, 1);
    }
    assert_eq!(a.exchange.link.counters.limited_locally.load(Relaxed), 3);
    // Another rule for the customer (a configuration reloaded) asks Redis again.
    let other = quota(120, 60, 2);
    assert!(matches!(
        a.quotas.admit(erin, &other, T0 + S / 2, true),
        Admission::Later(_)
    ));
    // Once the next request conforms, Redis decides again.
    assert!(asked(T0 + 2 * S).is_allowed());
}

#[test]
fn requests_arriving_together_share_one_lease_instead_of_each_taking_one() {
    let server = Server::start("lease-together");
    let clock = Clock::manual(T0);
    let mut leased = settings(&server.url());
    leased.quotas = QuotaMode::Leased;
    leased.lease = 5;
    let a = node(&leased, &clock);
    let q = quota(60, 60, 20);
    let dave = Customer::new("dave");
    // Five requests decided before any answer came back: one asks Redis, four wait for it.
    let waiting: Vec<_> = (0..5)
        .map(|_| match a.quotas.admit(dave, &q, T0, true) {
            Admission::Later(later) => runtime().spawn(later),
            _ => panic!("no lease yet: every one waits"),
        })
        .collect();
    for answer in waiting {
        assert!(runtime().block_on(answer).unwrap().unwrap().is_allowed());
    }
    // One lease of 5 taken from Redis, all of it spent: the TAT moved by 5 intervals of 1 s.
    let client = redis::Client::open(server.url().as_str()).unwrap();
    let mut con = client.get_connection().unwrap();
    let key = format!("cellgate:quota:{}", dave.key);
    let tat: u64 = redis::cmd("GET").arg(&key).query(&mut con).unwrap();
    assert_eq!(tat, T0 + 5 * S);
}

#[test]
fn an_unreachable_redis_refuses_money_paths_and_limits_the_rest_locally() {
    let dir = std::env::temp_dir().join(format!("cellgate-redis-none-{}", std::process::id()));
    let url = format!("redis+unix://{}/absent.sock", dir.display());
    let clock = Clock::manual(T0);
    let q = quota(60, 60, 2);
    for (unavailable, money, other) in [
        (Unavailable::RefuseMoneyPaths, false, true),
        (Unavailable::Refuse, false, false),
        (Unavailable::Local, true, true),
    ] {
        let mut gone = settings(&url);
        gone.unavailable = unavailable;
        let cluster = node(&gone, &clock);
        let alice = Customer::new("alice");
        // The first check waits for Redis (and fails); from then on Redis is taken to be down.
        let Admission::Later(first) = cluster.quotas.admit(alice, &q, T0, true) else {
            panic!("the first check asks Redis");
        };
        let first = runtime().block_on(first);
        assert_eq!(
            first.is_ok(),
            !matches!(
                unavailable,
                Unavailable::Refuse | Unavailable::RefuseMoneyPaths
            ),
            "{unavailable:?}"
        );
        let admitted = |moves_money: bool| match cluster.quotas.admit(alice, &q, T0, moves_money) {
            Admission::Now(verdict) => Some(verdict.is_allowed()),
            Admission::Refused(refusal) => {
                assert_eq!(refusal.reason, crate::reason::Reason::QuotaUnavailable);
                assert!(refusal
                    .fields
                    .iter()
                    .any(|(name, _)| *name == "retry-after"));
                None
            }
            Admission::Later(_) => panic!("Redis is down: no waiting"),
        };
        assert_eq!(
            admitted(true).is_some(),
            money,
            "{unavailable:?} money path"
        );
        assert_eq!(
            admitted(false).is_some(),
            other,
            "{unavailable:?} other path"
        );
        if other {
            // The node's own limit holds: the burst of 2 is spent.
            while admitted(false) == Some(true) {}
            assert_eq!(admitted(false), Some(false));
        }
        let counters = &cluster.exchange.link.counters;
        assert!(counters.errors.load(Relaxed) >= 1 && counters.outages.load(Relaxed) == 1);
    }
}

#[test]
fn a_breaker_opened_on_one_node_is_open_on_the_other_until_the_same_time() {
    let server = Server::start("breaker");
    let clock = Clock::manual(T0);
    let (a, b) = (
        node(&settings(&server.url()), &clock),
        node(&settings(&server.url()), &clock),
    );
    subscribed(&[&a, &b]);
    a.load.opened_until(1, T0 + 30 * S);
    wait_until("b sees the opening", || {
        b.load.open_until_us(1) == T0 + 30 * S
    });
    assert_eq!(b.load.open_until_us(0), 0);
    // An earlier opening heard later does not shorten it; in-flight counts stay each node's.
    b.load.opened_until(1, T0 + 10 * S);
    a.load.acquire(2);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(a.load.open_until_us(1), T0 + 30 * S);
    assert_eq!((a.load.in_flight(2), b.load.in_flight(2)), (1, 0));
    a.load.release(2);
}
