//! Each cell's live load: requests in flight and whether its health checks pass, behind one
//! trait with an in-process implementation (one worker's atomics) and the zone's
//! (`zone_load`: every worker of the node counts into one table).
//!
//! Cells are named by their position in configuration order, which every worker of a node
//! shares (they read one configuration). A slot is taken by [`crate::cells::InFlight`] and
//! given back when it drops, so no code path can forget to release one; the zone's
//! implementation also gives back the slots of a worker that died holding them.

use super::Scope;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// The live load of every cell of the configuration, by cell position.
pub trait LoadStore: Send + Sync + std::fmt::Debug {
    /// Requests in flight on `cell`, over every worker sharing this store.
    fn in_flight(&self, cell: usize) -> u32;
    /// Takes one slot on `cell` (use [`crate::cells::InFlight`], which gives it back).
    fn acquire(&self, cell: usize);
    /// Takes one slot on `cell` only while fewer than `max` are held, over every worker
    /// sharing this store; false, taking none, when `max` are. Two deciders that both saw
    /// room for one never both get it.
    fn try_acquire(&self, cell: usize, max: u32) -> bool;
    /// Gives back a slot taken by `acquire`.
    fn release(&self, cell: usize);
    /// Whether `cell` passes its health checks.
    fn healthy(&self, cell: usize) -> bool;
    /// Marks `cell` up or down; returns the previous state.
    fn set_healthy(&self, cell: usize, healthy: bool) -> bool;
    /// Until when (microseconds, the router's clock) some worker's breaker for `cell` is open;
    /// 0 when none has opened.
    fn open_until_us(&self, cell: usize) -> u64;
    /// Says that a breaker for `cell` opened until `until_us`; a later opening already said
    /// stands (compare-and-swap to the maximum).
    fn opened_until(&self, cell: usize, until_us: u64);
    /// Whether this worker is the one to probe the cells' health now, holding the node's probe
    /// lease for `lease_s` seconds from `now_s` (taken when free, expired, or held by a worker
    /// that is gone; renewed by its holder). A worker's own store always says yes.
    fn may_probe(&self, _now_s: u64, _lease_s: u64) -> bool {
        true
    }
    /// Who sees a change.
    fn scope(&self) -> Scope;
}

#[derive(Debug)]
struct Slot {
    in_flight: AtomicU32,
    healthy: AtomicBool,
    open_until_us: AtomicU64,
}

/// One worker's own load table.
#[derive(Debug)]
pub struct InProcessLoad {
    cells: Vec<Slot>,
}

impl InProcessLoad {
    /// A table for `cells` cells, each idle and healthy.
    pub fn new(cells: usize) -> Self {
        InProcessLoad {
            cells: (0..cells)
                .map(|_| Slot {
                    in_flight: AtomicU32::new(0),
                    healthy: AtomicBool::new(true),
                    open_until_us: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

impl LoadStore for InProcessLoad {
    #[inline]
    fn in_flight(&self, cell: usize) -> u32 {
        self.cells[cell].in_flight.load(Ordering::Relaxed)
    }

    fn acquire(&self, cell: usize) {
        self.cells[cell].in_flight.fetch_add(1, Ordering::Relaxed);
    }

    fn try_acquire(&self, cell: usize, max: u32) -> bool {
        self.cells[cell]
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    fn release(&self, cell: usize) {
        self.cells[cell].in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    #[inline]
    fn healthy(&self, cell: usize) -> bool {
        self.cells[cell].healthy.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, cell: usize, healthy: bool) -> bool {
        self.cells[cell].healthy.swap(healthy, Ordering::Relaxed)
    }

    #[inline]
    fn open_until_us(&self, cell: usize) -> u64 {
        self.cells[cell].open_until_us.load(Ordering::Acquire)
    }

    fn opened_until(&self, cell: usize, until_us: u64) {
        self.cells[cell]
            .open_until_us
            .fetch_max(until_us, Ordering::AcqRel);
    }

    fn scope(&self) -> Scope {
        Scope::Worker
    }
}
