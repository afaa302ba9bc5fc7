//! What a node tells the others and hears from them: revocations, lifts and breaker openings,
//! published on one channel; and the revocations it knows (its ledger), written back to Redis
//! and reloaded from it whenever the subscription (re)starts, so that a Redis restarted empty,
//! or a node cut off for a while, loses nothing.
//!
//! One task per worker, on the worker's I/O runtime: it subscribes, writes back, reloads,
//! announces a resync (the others reload), then publishes what the worker changes and applies
//! what the others change. A failure ends the session; the next starts after the retry
//! interval. Revocations heard from other nodes are also handed to the control plane
//! ([`Exchange::take_heard`]), which appends them to the node's revocation log so that a restart
//! without Redis still refuses them.

use super::link::{Link, BULK_TIMEOUT};
use super::RedisSettings;
use crate::auth::revocations::cutoff_forget_after_s;
use crate::clock::Clock;
use crate::runtime::runtime;
use crate::state::{LoadStore, RevocationStore};
use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, Notify};

const MERGE_CUTOFF: &str = include_str!("merge_cutoff.lua");
const LIFT_CUTOFF: &str = include_str!("lift_cutoff.lua");

/// A change of shared state, as published (and as the revocation log writes revocations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum SharedRevocation {
    RevokeToken {
        jti: String,
        forget_after_s: u64,
    },
    RevokeCustomer {
        customer_id: String,
        issued_before_s: f64,
    },
    LiftCustomer {
        customer_id: String,
    },
}

impl SharedRevocation {
    /// Applies this change to `store`; says whether it can have changed something (a lift:
    /// whether there was a cut-off to lift).
    pub fn apply(&self, store: &dyn RevocationStore, now_s: u64) -> bool {
        match self {
            SharedRevocation::RevokeToken {
                jti,
                forget_after_s,
            } => store.revoke_token(jti, *forget_after_s, now_s),
            SharedRevocation::RevokeCustomer {
                customer_id,
                issued_before_s,
            } => store.revoke_customer(customer_id, *issued_before_s, now_s),
            SharedRevocation::LiftCustomer { customer_id } => {
                return store.lift_customer(customer_id, now_s)
            }
        }
        true
    }
}

/// What travels on the channel: a revocation or lift (tagged by `op` as the log writes it), or
/// one of the signals.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum Change {
    Revocation(SharedRevocation),
    Signal(Signal),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Signal {
    BreakerOpened {
        cell: String,
        open_until_us: u64,
    },
    /// A node wrote back what it knows: reload.
    Resync,
}

/// A change as published: who made it, and what.
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    node: &'a str,
    #[serde(flatten)]
    change: &'a Change,
}

/// A change as heard.
#[derive(Debug, Deserialize)]
struct Heard {
    node: String,
    #[serde(flatten)]
    change: Change,
}

/// The revocations this worker knows, to write back after Redis lost them.
#[derive(Debug, Default)]
struct Ledger {
    tokens: HashMap<String, u64>,
    cutoffs: HashMap<String, f64>,
}

/// Redis key and channel names.
struct Names {
    tokens: String,
    cutoffs: String,
    /// Each lifted cut-off, until it refuses nothing any more: a node that was cut off while
    /// the lift happened neither writes it back nor keeps refusing by it.
    lifted: String,
    channel: String,
}

/// Whether a cut-off written to Redis was just made here, or is written back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Written {
    Fresh,
    Known,
}

/// The worker's side of the exchange.
pub struct Exchange {
    pub link: Arc<Link>,
    node: String,
    names: Names,
    revocations: Arc<dyn RevocationStore>,
    load: Arc<dyn LoadStore>,
    cell_ids: Vec<String>,
    clock: Clock,
    max_token_lifetime_s: Option<u64>,
    ledger: Mutex<Ledger>,
    heard: Mutex<Vec<SharedRevocation>>,
    /// The cut-offs this worker lifted whose lifts are not yet in Redis.
    lifting: Mutex<HashMap<String, f64>>,
    /// Revocations and lifts that failed to reach Redis, sent first in the next session.
    unsent: Mutex<Vec<Change>>,
    outbox: mpsc::UnboundedSender<Change>,
    pending: Mutex<Option<mpsc::UnboundedReceiver<Change>>>,
    started: AtomicBool,
    /// Whether a session is subscribed and has reloaded (what this worker knows is current).
    subscribed: AtomicBool,
    stop: Arc<Notify>,
}

impl Exchange {
    /// The exchange for the stores in `local`, through `link`; nothing runs until `start`.
    pub fn new(link: Arc<Link>, settings: &RedisSettings, local: &super::Local) -> Arc<Self> {
        let (outbox, pending) = mpsc::unbounded_channel();
        let prefix = &settings.prefix;
        Arc::new(Exchange {
            link,
            node: node_id(),
            names: Names {
                tokens: format!("{prefix}:revoked:tokens"),
                cutoffs: format!("{prefix}:revoked:customers"),
                lifted: format!("{prefix}:revoked:lifted"),
                channel: format!("{prefix}:events"),
            },
            revocations: local.revocations.clone(),
            load: local.load.clone(),
            cell_ids: local.cell_ids.clone(),
            clock: local.clock.clone(),
            max_token_lifetime_s: local.max_token_lifetime_s,
            ledger: Mutex::default(),
            heard: Mutex::default(),
            lifting: Mutex::default(),
            unsent: Mutex::default(),
            outbox,
            pending: Mutex::new(Some(pending)),
            started: AtomicBool::new(false),
            subscribed: AtomicBool::new(false),
            stop: Arc::new(Notify::new()),
        })
    }

    /// Starts the worker's exchange task (once).
    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Relaxed) {
            return;
        }
        let Some(pending) = lock(&self.pending).take() else {
            return;
        };
        runtime().spawn(self.clone().run(pending));
    }

    /// Stops the task.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// Notes a revocation or lift made on this worker, and publishes it.
    pub fn made(&self, revocation: SharedRevocation) {
        if let SharedRevocation::LiftCustomer { customer_id } = &revocation {
            // What this worker lifts, for the lift's mark: Redis may not hold it (restarted
            // empty while the lift was made, nothing written back yet).
            let known_s = lock(&self.ledger).cutoffs.get(customer_id).copied();
            if let Some(before_s) = known_s {
                let mut lifting = lock(&self.lifting);
                let known = lifting.entry(customer_id.clone()).or_insert(before_s);
                *known = known.max(before_s);
            }
        }
        self.learn(&revocation);
        let _ = self.outbox.send(Change::Revocation(revocation));
    }

    /// Publishes that a breaker of cell `cell` opened until `open_until_us`.
    pub fn breaker_opened(&self, cell: usize, open_until_us: u64) {
        if let Some(id) = self.cell_ids.get(cell) {
            let _ = self.outbox.send(Change::Signal(Signal::BreakerOpened {
                cell: id.clone(),
                open_until_us,
            }));
        }
    }

    /// The revocations heard from other nodes since the last call, for the revocation log.
    pub fn take_heard(&self) -> Vec<SharedRevocation> {
        std::mem::take(&mut *lock(&self.heard))
    }

    /// Whether the subscription is up (and what Redis held was loaded).
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Relaxed)
    }

    /// Adds `revocation` to the ledger; says whether it told the ledger something new.
    fn learn(&self, revocation: &SharedRevocation) -> bool {
        let mut ledger = lock(&self.ledger);
        match revocation {
            SharedRevocation::RevokeToken {
                jti,
                forget_after_s,
            } => {
                let known = ledger.tokens.entry(jti.clone()).or_insert(0);
                let new = *known < *forget_after_s;
                *known = (*known).max(*forget_after_s);
                new
            }
            SharedRevocation::RevokeCustomer {
                customer_id,
                issued_before_s,
            } => {
                let known = ledger
                    .cutoffs
                    .entry(customer_id.clone())
                    .or_insert(f64::MIN);
                let new = *known < *issued_before_s;
                *known = known.max(*issued_before_s);
                new
            }
            SharedRevocation::LiftCustomer { customer_id } => {
                ledger.cutoffs.remove(customer_id).is_some()
            }
        }
    }

    /// Loads revocations this node already holds (its revocation log, read at start) into the
    /// node's store and the ledger, to write back to Redis; nothing is published.
    /// With `apply` false the node's store holds them already (the zone, which `cellgate
    /// serve` loaded before the workers started): only the ledger learns them, so a respawned
    /// worker does not put back a cut-off another node has lifted since.
    pub fn load(&self, revocations: &[SharedRevocation], apply: bool) {
        let now_s = self.clock.now_us() / 1_000_000;
        for revocation in revocations {
            self.learn(revocation);
            if apply {
                revocation.apply(&*self.revocations, now_s);
            }
        }
    }

    /// Applies a revocation or lift another node made to this node's store, and hands it to the
    /// log when it changed something.
    fn apply_heard(&self, revocation: SharedRevocation) {
        let now_s = self.clock.now_us() / 1_000_000;
        let new = self.learn(&revocation);
        let lift = matches!(revocation, SharedRevocation::LiftCustomer { .. });
        // A lift applies even when the ledger did not know the cut-off (another worker of this
        // node loaded it); a revocation already known is not applied twice.
        if (new || lift) && revocation.apply(&*self.revocations, now_s) {
            lock(&self.heard).push(revocation);
        }
    }

    /// Applies one message from the channel; says whether the sender asks for a reload.
    fn hear(&self, payload: &[u8]) -> bool {
        let Ok(envelope) = serde_json::from_slice::<Heard>(payload) else {
            return false;
        };
        if envelope.node == self.node {
            return false;
        }
        self.link.counters.received.fetch_add(1, Relaxed);
        match envelope.change {
            Change::Revocation(revocation) => self.apply_heard(revocation),
            Change::Signal(Signal::BreakerOpened {
                cell,
                open_until_us,
            }) => {
                if let Some(index) = self.cell_ids.iter().position(|id| *id == cell) {
                    self.load.opened_until(index, open_until_us);
                }
            }
            Change::Signal(Signal::Resync) => return true,
        }
        false
    }

    async fn run(self: Arc<Self>, mut pending: mpsc::UnboundedReceiver<Change>) {
        loop {
            let stopped = self.stop.clone();
            let ended = tokio::select! {
                biased;
                () = stopped.notified() => None,
                ended = self.session(&mut pending) => Some(ended),
            };
            self.subscribed.store(false, Relaxed);
            match ended {
                None | Some(Ok(())) => return,
                Some(Err(why)) => self.link.failed(&why),
            }
            tokio::select! {
                () = self.stop.notified() => return,
                () = tokio::time::sleep(self.link.retry()) => {}
            }
        }
    }

    /// One subscription, until it fails (Err) or the outbox closes (Ok).
    async fn session(&self, pending: &mut mpsc::UnboundedReceiver<Change>) -> Result<(), String> {
        let link = &self.link;
        let mut pubsub = link.run(link.client.get_async_pubsub()).await?;
        link.run(pubsub.subscribe(&self.names.channel)).await?;
        // After Redis restarted, the requests' connection's first command finds it broken and
        // has it reconnect: let that be this PING, not a request's quota check.
        let ping = redis::cmd("PING");
        let mut requests = link.connection();
        let _ = tokio::time::timeout(link.timeout, requests.send_packed_command(&ping)).await;
        let mut connection = link.bulk_connection();
        // What changed here while Redis was away goes first: a lift made meanwhile must not be
        // undone by reloading the cut-off Redis still holds.
        let unsent = std::mem::take(&mut *lock(&self.unsent));
        for change in unsent {
            self.send(&mut connection, change).await?;
        }
        while let Ok(change) = pending.try_recv() {
            self.send(&mut connection, change).await?;
        }
        self.write_back(&mut connection).await?;
        self.reload(&mut connection).await?;
        self.send(&mut connection, Change::Signal(Signal::Resync))
            .await?;
        link.counters.resyncs.fetch_add(1, Relaxed);
        self.subscribed.store(true, Relaxed);
        let mut messages = pubsub.into_on_message();
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING_EVERY);
        housekeeping.tick().await;
        // When Redis comes back every worker of every node resyncs at once: the reloads they
        // ask for are taken together, one per RELOAD_COALESCE, not one per request.
        let mut reload_at: Option<tokio::time::Instant> = None;
        loop {
            let reload_due = async {
                match reload_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = housekeeping.tick() => self.forget_expired(&mut connection).await?,
                () = reload_due => {
                    reload_at = None;
                    self.reload(&mut connection).await?;
                    link.counters.reloads.fetch_add(1, Relaxed);
                }
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err("the subscription was closed".into());
                    };
                    if self.hear(message.get_payload_bytes()) {
                        reload_at.get_or_insert_with(|| {
                            tokio::time::Instant::now() + RELOAD_COALESCE
                        });
                    }
                }
                change = pending.recv() => {
                    let Some(change) = change else { return Ok(()) };
                    self.send(&mut connection, change).await?;
                }
            }
        }
    }

    /// Writes one change to Redis (a revocation's entry) and publishes it; a change that
    /// could not be sent is kept for the next session.
    async fn send(&self, connection: &mut ConnectionManager, change: Change) -> Result<(), String> {
        let mut pipe = redis::pipe();
        if let Change::Revocation(revocation) = &change {
            self.write(&mut pipe, revocation, Written::Fresh);
        }
        pipe.cmd("PUBLISH")
            .arg(&self.names.channel)
            .arg(self.envelope(&change))
            .ignore();
        match self
            .link
            .run_within(BULK_TIMEOUT, pipe.query_async::<()>(connection))
            .await
        {
            Ok(()) => {
                self.link.counters.published.fetch_add(1, Relaxed);
                if let Change::Revocation(SharedRevocation::LiftCustomer { customer_id }) = &change
                {
                    lock(&self.lifting).remove(customer_id);
                }
                Ok(())
            }
            Err(why) => {
                // Signals are of the moment; revocations and lifts are sent next session.
                if let Change::Revocation(_) = change {
                    lock(&self.unsent).push(change);
                }
                Err(why)
            }
        }
    }

    fn envelope(&self, change: &Change) -> Vec<u8> {
        let envelope = Envelope {
            node: &self.node,
            change,
        };
        serde_json::to_vec(&envelope).unwrap_or_default()
    }

    /// Adds the commands that store `revocation` in Redis to `pipe`: a token's forget time and a
    /// cut-off only ever move later, and a cut-off written back does not undo a lift.
    fn write(&self, pipe: &mut redis::Pipeline, revocation: &SharedRevocation, written: Written) {
        match revocation {
            SharedRevocation::RevokeToken {
                jti,
                forget_after_s,
            } => {
                pipe.cmd("ZADD")
                    .arg(&self.names.tokens)
                    .arg("GT")
                    .arg(*forget_after_s)
                    .arg(jti)
                    .ignore();
            }
            SharedRevocation::RevokeCustomer {
                customer_id,
                issued_before_s,
            } => {
                let written = match written {
                    Written::Fresh => "fresh",
                    Written::Known => "known",
                };
                pipe.cmd("EVAL")
                    .arg(MERGE_CUTOFF)
                    .arg(2)
                    .arg(&self.names.cutoffs)
                    .arg(&self.names.lifted)
                    .arg(customer_id)
                    .arg(issued_before_s.to_string())
                    .arg(written)
                    .ignore();
            }
            SharedRevocation::LiftCustomer { customer_id } => {
                let lifted = lock(&self.lifting).get(customer_id).map(f64::to_string);
                pipe.cmd("EVAL")
                    .arg(LIFT_CUTOFF)
                    .arg(2)
                    .arg(&self.names.cutoffs)
                    .arg(&self.names.lifted)
                    .arg(customer_id)
                    .arg(lifted.unwrap_or_default())
                    .ignore();
            }
        }
    }

    /// Drops from the ledger what refuses nothing any more: tokens past their forget time,
    /// cut-offs older than the longest token lifetime.
    fn prune_ledger(&self, now_s: u64) -> Vec<String> {
        let mut ledger = lock(&self.ledger);
        ledger
            .tokens
            .retain(|_, forget_after_s| *forget_after_s > now_s);
        let Some(lifetime_s) = self.max_token_lifetime_s else {
            return Vec::new();
        };
        let outlived: Vec<String> = ledger
            .cutoffs
            .iter()
            .filter(|(_, before_s)| outlived(**before_s, lifetime_s, now_s))
            .map(|(customer, _)| customer.clone())
            .collect();
        for customer in &outlived {
            ledger.cutoffs.remove(customer);
        }
        outlived
    }

    /// Drops from the ledger and from Redis what refuses nothing any more, so that neither
    /// grows for as long as a session lasts.
    pub(super) async fn forget_expired(
        &self,
        connection: &mut ConnectionManager,
    ) -> Result<(), String> {
        let now_s = self.clock.now_us() / 1_000_000;
        let cutoffs_outlived = self.prune_ledger(now_s);
        let mut lifts_outlived = Vec::new();
        if let Some(lifetime_s) = self.max_token_lifetime_s {
            let lifted: HashMap<String, f64> = self
                .link
                .run_within(
                    BULK_TIMEOUT,
                    redis::cmd("HGETALL")
                        .arg(&self.names.lifted)
                        .query_async(connection),
                )
                .await?;
            lifts_outlived.extend(
                lifted
                    .into_iter()
                    .filter(|(_, before_s)| outlived(*before_s, lifetime_s, now_s))
                    .map(|(customer, _)| customer),
            );
        }
        let mut pipe = redis::pipe();
        if !lifts_outlived.is_empty() {
            pipe.cmd("HDEL")
                .arg(&self.names.lifted)
                .arg(&lifts_outlived)
                .ignore();
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&self.names.tokens)
            .arg("-inf")
            .arg(now_s)
            .ignore();
        if !cutoffs_outlived.is_empty() {
            pipe.cmd("HDEL")
                .arg(&self.names.cutoffs)
                .arg(&cutoffs_outlived)
                .ignore();
        }
        self.link
            .run_within(BULK_TIMEOUT, pipe.query_async::<()>(connection))
            .await
    }

    /// Writes every revocation this worker knows back to Redis (which may have restarted
    /// empty), dropping what refuses nothing any more.
    async fn write_back(&self, connection: &mut ConnectionManager) -> Result<(), String> {
        let now_s = self.clock.now_us() / 1_000_000;
        self.prune_ledger(now_s);
        let mut pipe = redis::pipe();
        {
            let ledger = lock(&self.ledger);
            for (jti, forget_after_s) in &ledger.tokens {
                self.write(
                    &mut pipe,
                    &SharedRevocation::RevokeToken {
                        jti: jti.clone(),
                        forget_after_s: *forget_after_s,
                    },
                    Written::Known,
                );
            }
            for (customer_id, issued_before_s) in &ledger.cutoffs {
                self.write(
                    &mut pipe,
                    &SharedRevocation::RevokeCustomer {
                        customer_id: customer_id.clone(),
                        issued_before_s: *issued_before_s,
                    },
                    Written::Known,
                );
            }
        }
        pipe.cmd("ZREMRANGEBYSCORE")
            .arg(&self.names.tokens)
            .arg("-inf")
            .arg(now_s)
            .ignore();
        self.link
            .run_within(BULK_TIMEOUT, pipe.query_async::<()>(connection))
            .await
    }

    /// Applies every revocation Redis holds that this worker did not know.
    async fn reload(&self, connection: &mut ConnectionManager) -> Result<(), String> {
        let now_s = self.clock.now_us() / 1_000_000;
        let mut pipe = redis::pipe();
        pipe.cmd("ZRANGE")
            .arg(&self.names.tokens)
            .arg(format!("({now_s}"))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .cmd("HGETALL")
            .arg(&self.names.cutoffs)
            .cmd("HGETALL")
            .arg(&self.names.lifted);
        type Held = (
            Vec<(String, f64)>,
            HashMap<String, f64>,
            HashMap<String, f64>,
        );
        let (tokens, cutoffs, lifted) = self
            .link
            .run_within(BULK_TIMEOUT, pipe.query_async::<Held>(connection))
            .await?;
        for (jti, forget_after_s) in tokens {
            self.apply_heard(SharedRevocation::RevokeToken {
                jti,
                forget_after_s: forget_after_s as u64,
            });
        }
        for (customer_id, issued_before_s) in cutoffs {
            let outlived = self
                .max_token_lifetime_s
                .is_some_and(|life| outlived(issued_before_s, life, now_s));
            if !outlived {
                self.apply_heard(SharedRevocation::RevokeCustomer {
                    customer_id,
                    issued_before_s,
                });
            }
        }
        // A lift made while this worker did not hear: the cut-off it lifted (or an older one)
        // is lifted here too; a later one, made since, stands.
        for (customer_id, lifted_before_s) in lifted {
            let known = lock(&self.ledger).cutoffs.get(&customer_id).copied();
            if known.is_some_and(|before_s| before_s <= lifted_before_s) {
                self.apply_heard(SharedRevocation::LiftCustomer { customer_id });
            }
        }
        Ok(())
    }
}

/// How long a reload another node asked for waits for the others asking with it.
const RELOAD_COALESCE: std::time::Duration = std::time::Duration::from_millis(100);

/// How often a session drops from the ledger and from Redis what refuses nothing any more.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether a cut-off at `before_s` refuses nothing at `now_s` (no token issued before it can
/// still be valid, none living longer than `lifetime_s`).
fn outlived(before_s: f64, lifetime_s: u64, now_s: u64) -> bool {
    cutoff_forget_after_s(before_s, Some(lifetime_s)) <= now_s
}

/// This worker's name on the channel (its own messages come back to it): its pid and a random
/// part, so a pid reused on another host or later is another node.
fn node_id() -> String {
    let mut random = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
    format!("{}-{:016x}", std::process::id(), u64::from_le_bytes(random))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_travel_as_one_flat_object_tagged_by_op() {
        let change = Change::Revocation(SharedRevocation::RevokeCustomer {
            customer_id: "c-1".into(),
            issued_before_s: 1.5,
        });
        let sent = serde_json::to_value(Envelope {
            node: "n",
            change: &change,
        })
        .unwrap();
        assert_eq!(
            sent,
            serde_json::json!({"node": "n", "op": "revoke_customer", "customer_id": "c-1", "issued_before_s": 1.5})
        );
        let opened = r#"{"node": "m", "op": "breaker_opened", "cell": "a", "open_until_us": 7}"#;
        let heard: Heard = serde_json::from_str(opened).unwrap();
        assert!(matches!(
            heard.change,
            Change::Signal(Signal::BreakerOpened {
                open_until_us: 7,
                ..
            })
        ));
        let resync: Heard = serde_json::from_str(r#"{"node": "m", "op": "resync"}"#).unwrap();
        assert!(matches!(resync.change, Change::Signal(Signal::Resync)));
        assert!(serde_json::from_str::<Heard>(r#"{"node": "m", "op": "other"}"#).is_err());
    }
}
