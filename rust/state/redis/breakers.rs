//! Cell load with breaker openings broadcast: in-flight counts and health stay the node's own
//! (each node probes its own path to a cell), but a breaker that opens on one node opens on
//! every node until the same time (the router's clock is the wall clock, which nodes share).

use super::exchange::Exchange;
use crate::state::{LoadStore, Scope};
use std::sync::Arc;

/// The node's load store, telling the other nodes when a breaker opens.
pub struct RedisLoad {
    local: Arc<dyn LoadStore>,
    exchange: Arc<Exchange>,
}

impl RedisLoad {
    /// `local`, with openings published through `exchange`.
    pub fn new(local: Arc<dyn LoadStore>, exchange: Arc<Exchange>) -> Self {
        RedisLoad { local, exchange }
    }
}

impl std::fmt::Debug for RedisLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLoad")
            .field("local", &self.local)
            .finish()
    }
}

impl LoadStore for RedisLoad {
    fn in_flight(&self, cell: usize) -> u32 {
        self.local.in_flight(cell)
    }
    fn acquire(&self, cell: usize) {
        self.local.acquire(cell);
    }
    fn try_acquire(&self, cell: usize, max: u32) -> bool {
        self.local.try_acquire(cell, max)
    }
    fn release(&self, cell: usize) {
        self.local.release(cell);
    }
    fn healthy(&self, cell: usize) -> bool {
        self.local.healthy(cell)
    }
    fn set_healthy(&self, cell: usize, healthy: bool) -> bool {
        self.local.set_healthy(cell, healthy)
    }
    fn open_until_us(&self, cell: usize) -> u64 {
        self.local.open_until_us(cell)
    }
    fn opened_until(&self, cell: usize, until_us: u64) {
        let before = self.local.open_until_us(cell);
        self.local.opened_until(cell, until_us);
        if until_us > before {
            self.exchange.breaker_opened(cell, until_us);
        }
    }
    fn may_probe(&self, now_s: u64, lease_s: u64) -> bool {
        self.local.may_probe(now_s, lease_s)
    }
    fn scope(&self) -> Scope {
        self.local.scope()
    }
}
