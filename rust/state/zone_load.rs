//! Each cell's load in the zone: every worker counts the slots it holds on a cell in its own
//! word of the cell's row (its worker record), so a cell's in-flight count is the row's sum and
//! a worker killed holding slots leaves them in words no one else writes. The first worker to
//! find a record's process gone (`process`: its pid and start time, so a reused pid is not
//! taken for it) zeroes those words and frees the record: at start (when granian respawns a
//! worker, the new one sweeps), and every second while the node runs.
//!
//! A record is taken by compare-and-swap on its owner word, from 0, or from a dead owner by a
//! sweeper, which zeroes the words and then stores 0; a sweeper killed in between leaves its
//! own dead identity there, and the next sweeper takes over. Health is one word per cell, 0 when
//! the cell is up, written by whoever probes (see `health`); a breaker opening is another, the
//! microsecond until which some worker's breaker for the cell refuses, raised to the maximum.

use super::process;
use super::zone::{Zone, H_PROBER, H_RECLAIMED_SLOTS, H_RECLAIMED_WORKERS};
use super::{LoadStore, Scope};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a running node looks for the records of dead workers.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// This worker's view of the node's load table, holding one worker record.
pub struct ZoneLoad {
    zone: Arc<Zone>,
    record: usize,
    /// This process's identity (pid and start time), held in its worker record.
    identity: u64,
}

impl std::fmt::Debug for ZoneLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZoneLoad")
            .field("zone", &self.zone.path())
            .field("record", &self.record)
            .finish()
    }
}

/// Frees every worker record whose process is gone, giving back the slots it held; returns
/// how many slots were given back.
pub fn sweep(zone: &Zone) -> u64 {
    let me = process::me();
    let (cells, workers) = zone.load_sizes();
    let mut given_back = 0;
    for record in 0..workers {
        let owner = zone.worker_word(record);
        let holder = owner.load(SeqCst);
        if holder == 0 || holder == me || process::alive(holder) {
            continue;
        }
        if owner.compare_exchange(holder, me, SeqCst, SeqCst).is_err() {
            continue; // another sweeper took it
        }
        for cell in 0..cells {
            given_back += zone.held_word(cell, record).swap(0, SeqCst);
        }
        owner.store(0, SeqCst);
        zone.word(H_RECLAIMED_WORKERS).fetch_add(1, SeqCst);
    }
    zone.word(H_RECLAIMED_SLOTS).fetch_add(given_back, SeqCst);
    given_back
}

impl ZoneLoad {
    /// Takes a worker record in `zone` for a configuration of `cells` cells (after sweeping the
    /// records of dead workers), and starts sweeping every second while it is held.
    pub fn new(zone: Arc<Zone>, cells: usize) -> Result<Arc<Self>, String> {
        let (cell_slots, worker_slots) = zone.load_sizes();
        if cells > cell_slots {
            return Err(format!(
                "the zone has room for {cell_slots} cells, the configuration has {cells}"
            ));
        }
        sweep(&zone);
        let identity = process::me();
        let record = (0..worker_slots)
            .find(|&record| {
                zone.worker_word(record)
                    .compare_exchange(0, identity, SeqCst, SeqCst)
                    .is_ok()
            })
            .ok_or_else(|| {
                format!("every one of the zone's {worker_slots} worker records is held")
            })?;
        for cell in 0..cell_slots {
            zone.held_word(cell, record).store(0, SeqCst);
        }
        let load = Arc::new(ZoneLoad {
            zone,
            record,
            identity,
        });
        let weak: Weak<ZoneLoad> = Arc::downgrade(&load);
        let _ = std::thread::Builder::new()
            .name("cellgate-zone-sweep".into())
            .spawn(move || loop {
                std::thread::sleep(SWEEP_EVERY);
                match weak.upgrade() {
                    Some(load) => drop(sweep(&load.zone)),
                    None => return,
                }
            });
        Ok(load)
    }

    /// The worker record this view holds.
    pub fn record(&self) -> usize {
        self.record
    }
}

impl Drop for ZoneLoad {
    fn drop(&mut self) {
        let (cells, _) = self.zone.load_sizes();
        for cell in 0..cells {
            self.zone.held_word(cell, self.record).store(0, SeqCst);
        }
        let _ =
            self.zone
                .worker_word(self.record)
                .compare_exchange(self.identity, 0, SeqCst, SeqCst);
    }
}

impl LoadStore for ZoneLoad {
    fn in_flight(&self, cell: usize) -> u32 {
        let (_, workers) = self.zone.load_sizes();
        let held: u64 = (0..workers)
            .map(|record| self.zone.held_word(cell, record).load(SeqCst))
            .sum();
        u32::try_from(held).unwrap_or(u32::MAX)
    }

    fn acquire(&self, cell: usize) {
        self.zone.held_word(cell, self.record).fetch_add(1, SeqCst);
    }

    fn try_acquire(&self, cell: usize, max: u32) -> bool {
        // The count is spread over the workers' words, so no one compare-and-swap can bound
        // it: take the slot, then count. Of two that take the last slot at once, each counts
        // the other's and gives its own back, or the later one does; never both keep it.
        self.acquire(cell);
        if self.in_flight(cell) <= max {
            return true;
        }
        self.release(cell);
        false
    }

    fn release(&self, cell: usize) {
        let held = self.zone.held_word(cell, self.record);
        // Never below 0, even if the record was wrongly swept under a live worker.
        let _ = held.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    }

    fn healthy(&self, cell: usize) -> bool {
        self.zone.cell_word(cell, 0).load(SeqCst) == 0
    }

    fn set_healthy(&self, cell: usize, healthy: bool) -> bool {
        self.zone
            .cell_word(cell, 0)
            .swap(u64::from(!healthy), SeqCst)
            == 0
    }

    fn open_until_us(&self, cell: usize) -> u64 {
        self.zone.cell_word(cell, 1).load(SeqCst)
    }

    fn opened_until(&self, cell: usize, until_us: u64) {
        // fetch_max is one compare-and-swap loop: the latest opening wins, none is lost.
        self.zone.cell_word(cell, 1).fetch_max(until_us, SeqCst);
    }

    fn may_probe(&self, now_s: u64, lease_s: u64) -> bool {
        // The lease word has room for a bare pid (and a lapse time), which lapses by itself.
        probe_lease(&self.zone, u64::from(std::process::id()), now_s, lease_s)
    }

    fn scope(&self) -> Scope {
        Scope::Node
    }
}

/// Takes or renews the node's probe lease for `pid`: one worker probes the cells' health for
/// the whole node. A lease lapses `lease_s` after its last renewal, or at once when its holder
/// is gone, so a killed prober is replaced within a lease.
pub fn probe_lease(zone: &Zone, pid: u64, now_s: u64, lease_s: u64) -> bool {
    let word = zone.word(H_PROBER);
    let mine = (pid << 32) | ((now_s + lease_s) & 0xffff_ffff);
    loop {
        let current = word.load(SeqCst);
        let (holder, until_s) = (current >> 32, current & 0xffff_ffff);
        let free = holder == 0 || until_s < now_s & 0xffff_ffff || !process::alive(holder);
        if holder != pid && !free {
            return false;
        }
        if holder == pid && until_s > (now_s + lease_s / 2) & 0xffff_ffff {
            return true;
        }
        if word.compare_exchange(current, mine, SeqCst, SeqCst).is_ok() {
            return true;
        }
    }
}
