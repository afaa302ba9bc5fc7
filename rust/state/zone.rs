//! The node's shared-memory zone: one file every worker maps, holding fixed-size tables of
//! atomics (no pointers, no Rust collections), as nginx's zones and HAProxy's stick tables.
//!
//! Layout (every word a little-endian `u64`, every slot four words):
//!
//! ```text
//! header   64 words: magic, version, revocation_slots, quota_slots, writer lock, counters,
//!          cell_slots, worker_slots
//! tokens   revocation_slots slots: key_hi, key_lo, forget_after_s, 0
//! cutoffs  revocation_slots slots: key_hi, key_lo, issued_before_s (f64 bits), forget_after_s
//! quotas   quota_slots slots:      key_hi, key_lo, tat_ns, 0
//! cells    cell_slots slots:       down, open_until_us, 0, 0
//! held     cell_slots rows of worker_slots words: slots held on the cell by each worker record
//! workers  worker_slots words:     the process owning each worker record, 0 when free
//! ```
//!
//! A cell's in-flight count is the sum of its row of `held`: each word is written by the one
//! process owning that worker record, so a worker killed while holding slots leaves them in
//! its own words, which the next worker to find it gone zeroes (`zone_load`).
//!
//! A key is the first 128 bits of the SHA-256 of the jti or customer id (`StateKey`, hashed once
//! per verified token), with the top word's lowest bit set so that 0 means an empty slot: keys are compared by 127 bits, never by a short
//! hash. A key lives in one of the `WINDOW` slots from its home slot; there are no tombstones.
//!
//! Readers never lock and never wait: a slot is read as `key_hi`, the rest, `key_hi` again, and
//! trusted only if both match. Writers that add or remove a slot take the zone's one writer
//! lock, which holds its holder's identity (pid and start time, `process`): a waiter takes it
//! over from a holder that no longer runs, so a worker killed holding it wedges nothing. A writer empties a slot's `key_hi`
//! first and writes it last, so a writer killed mid-write leaves an empty slot. A customer's
//! GCRA state changes without the lock, by compare-and-swap on its `tat_ns`.

use memmap2::MmapRaw;
use std::fs::{File, OpenOptions};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

const MAGIC: u64 = u64::from_le_bytes(*b"CGZONE\0\0");
const VERSION: u64 = 2;
const HEADER_WORDS: usize = 64;
pub(super) const SLOT_WORDS: usize = 4;
/// How many slots from its home slot a key may live in.
pub(super) const WINDOW: usize = 8;
/// The most slots a table may have (each 32 bytes).
const MAX_SLOTS: u64 = 1 << 26;

const H_MAGIC: usize = 0;
const H_VERSION: usize = 1;
const H_REVOCATION_SLOTS: usize = 2;
const H_QUOTA_SLOTS: usize = 3;
const H_WRITER: usize = 4;
/// Nonzero once anything was ever revoked: until then a check reads one word.
pub(super) const H_REVOKED_EVER: usize = 5;
pub(super) const H_EVICTED_TOKENS: usize = 6;
pub(super) const H_EVICTED_CUTOFFS: usize = 7;
pub(super) const H_EVICTED_QUOTAS: usize = 8;
const H_LOCK_TAKEOVERS: usize = 9;
const H_CELL_SLOTS: usize = 10;
const H_WORKER_SLOTS: usize = 11;
/// Slots given back for workers that died holding them.
pub(super) const H_RECLAIMED_SLOTS: usize = 12;
/// Worker records taken over from dead workers.
pub(super) const H_RECLAIMED_WORKERS: usize = 13;
/// The node's health-probe lease: the holder's pid in the high half, the second it lapses in
/// the low half (`zone_load::may_probe`).
pub(super) const H_PROBER: usize = 14;
/// Words per cell of the cell table.
pub(super) const CELL_WORDS: usize = 4;
/// The most cells and worker records a zone may have.
const MAX_CELLS: u64 = 1 << 12;
const MAX_WORKERS: u64 = 1 << 10;

/// How many slots each table of a zone has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneSizes {
    pub revocation_slots: u64,
    pub quota_slots: u64,
    /// Cells of the configuration (at least one).
    pub cell_slots: u64,
    /// Worker records: at least the workers alive at once, respawned ones included.
    pub worker_slots: u64,
}

/// One of the zone's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Tokens,
    Cutoffs,
    Quotas,
}

/// A key: 128 bits of SHA-256, top word never 0.
pub(super) type Key = (u64, u64);

/// The key of a jti or customer id.
pub(super) fn key_of(text: &str) -> Key {
    super::StateKey::of(text).words()
}

/// What the zone's counters say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZoneCounters {
    /// Revoked tokens dropped, before their expiry, to make room.
    pub evicted_tokens: u64,
    /// Customer cut-offs dropped, before no token could be refused by them, to make room.
    pub evicted_cutoffs: u64,
    /// Customers whose GCRA state was dropped, bucket not yet full, to make room.
    pub evicted_quotas: u64,
    /// Times the writer lock was taken over from a process that had died holding it.
    pub lock_takeovers: u64,
    /// In-flight slots given back for workers that died holding them.
    pub reclaimed_slots: u64,
    /// Worker records freed after their worker died.
    pub reclaimed_workers: u64,
}

/// A mapped zone.
pub struct Zone {
    map: MmapRaw,
    revocation_slots: usize,
    quota_slots: usize,
    cell_slots: usize,
    worker_slots: usize,
    path: String,
}

/// The zone's writer lock, released on drop.
/// The writer lock, held by the identity in its second field.
pub(super) struct WriterGuard<'a>(&'a Zone, u64);

impl Drop for WriterGuard<'_> {
    fn drop(&mut self) {
        // Only if still ours: a holder taken for dead must not free its successor's lock.
        let _ = self
            .0
            .word(H_WRITER)
            .compare_exchange(self.1, 0, SeqCst, SeqCst);
    }
}

fn words_for(sizes: &ZoneSizes) -> u64 {
    HEADER_WORDS as u64
        + (2 * sizes.revocation_slots + sizes.quota_slots) * SLOT_WORDS as u64
        + sizes.cell_slots * (CELL_WORDS as u64 + sizes.worker_slots)
        + sizes.worker_slots
}

/// Whether every size is within its bounds; the message names the first that is not.
fn check_sizes(sizes: &ZoneSizes) -> Result<(), String> {
    for (name, slots, low, high) in [
        (
            "revocation_slots",
            sizes.revocation_slots,
            WINDOW as u64,
            MAX_SLOTS,
        ),
        ("quota_slots", sizes.quota_slots, WINDOW as u64, MAX_SLOTS),
        ("cell_slots", sizes.cell_slots, 1, MAX_CELLS),
        ("worker_slots", sizes.worker_slots, 1, MAX_WORKERS),
    ] {
        if !(low..=high).contains(&slots) {
            return Err(format!("{name}: must be {low} to {high}"));
        }
    }
    Ok(())
}

impl Zone {
    /// Creates (or replaces) the zone file at `path` with these table sizes, all slots empty.
    pub fn create(path: &str, sizes: ZoneSizes) -> Result<Zone, String> {
        check_sizes(&sizes)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|err| format!("cannot create {path:?}: {err}"))?;
        file.set_len(words_for(&sizes) * 8)
            .map_err(|err| format!("cannot size {path:?}: {err}"))?;
        let zone = Self::map(file, path, &sizes)?;
        zone.word(H_VERSION).store(VERSION, SeqCst);
        zone.word(H_REVOCATION_SLOTS)
            .store(sizes.revocation_slots, SeqCst);
        zone.word(H_QUOTA_SLOTS).store(sizes.quota_slots, SeqCst);
        zone.word(H_CELL_SLOTS).store(sizes.cell_slots, SeqCst);
        zone.word(H_WORKER_SLOTS).store(sizes.worker_slots, SeqCst);
        zone.word(H_MAGIC).store(MAGIC, SeqCst);
        Ok(zone)
    }

    /// Maps the zone at `path`; refused unless its header says this layout and its size agrees.
    pub fn open(path: &str) -> Result<Zone, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|err| format!("cannot open {path:?}: {err}"))?;
        let len = file
            .metadata()
            .map_err(|err| format!("cannot read {path:?}: {err}"))?
            .len();
        if len < HEADER_WORDS as u64 * 8 {
            return Err(format!("{path:?} is not a cellgate zone (too short)"));
        }
        let none = ZoneSizes {
            revocation_slots: 0,
            quota_slots: 0,
            cell_slots: 0,
            worker_slots: 0,
        };
        let header = Self::map(file, path, &none)?;
        let magic = header.word(H_MAGIC).load(SeqCst);
        let version = header.word(H_VERSION).load(SeqCst);
        if magic != MAGIC {
            return Err(format!("{path:?} is not a cellgate zone (bad magic)"));
        }
        if version != VERSION {
            return Err(format!(
                "{path:?} is a zone of layout version {version}, this build maps {VERSION}"
            ));
        }
        let sizes = ZoneSizes {
            revocation_slots: header.word(H_REVOCATION_SLOTS).load(SeqCst),
            quota_slots: header.word(H_QUOTA_SLOTS).load(SeqCst),
            cell_slots: header.word(H_CELL_SLOTS).load(SeqCst),
            worker_slots: header.word(H_WORKER_SLOTS).load(SeqCst),
        };
        if check_sizes(&sizes).is_err() || len != words_for(&sizes) * 8 {
            return Err(format!(
                "{path:?}: its size ({len} bytes) is not that of its tables \
                 ({} revocation, {} quota, {} cell, {} worker slots)",
                sizes.revocation_slots, sizes.quota_slots, sizes.cell_slots, sizes.worker_slots
            ));
        }
        Ok(Zone {
            revocation_slots: sizes.revocation_slots as usize,
            quota_slots: sizes.quota_slots as usize,
            cell_slots: sizes.cell_slots as usize,
            worker_slots: sizes.worker_slots as usize,
            ..header
        })
    }

    fn map(file: File, path: &str, sizes: &ZoneSizes) -> Result<Zone, String> {
        let map = MmapRaw::map_raw(&file).map_err(|err| format!("cannot map {path:?}: {err}"))?;
        Ok(Zone {
            map,
            revocation_slots: sizes.revocation_slots as usize,
            quota_slots: sizes.quota_slots as usize,
            cell_slots: sizes.cell_slots as usize,
            worker_slots: sizes.worker_slots as usize,
            path: path.to_owned(),
        })
    }

    /// The file this zone maps.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// How many slots the revocation tables and the quota table have.
    pub fn sizes(&self) -> (usize, usize) {
        (self.revocation_slots, self.quota_slots)
    }

    /// How many cells and worker records the load tables have.
    pub fn load_sizes(&self) -> (usize, usize) {
        (self.cell_slots, self.worker_slots)
    }

    fn load_start(&self) -> usize {
        HEADER_WORDS + (2 * self.revocation_slots + self.quota_slots) * SLOT_WORDS
    }

    /// Word `field` (0..CELL_WORDS) of cell `cell`'s entry in the cell table.
    pub(super) fn cell_word(&self, cell: usize, field: usize) -> &AtomicU64 {
        assert!(cell < self.cell_slots && field < CELL_WORDS);
        self.word(self.load_start() + cell * CELL_WORDS + field)
    }

    /// The slots worker record `worker` holds on `cell`.
    pub(super) fn held_word(&self, cell: usize, worker: usize) -> &AtomicU64 {
        assert!(cell < self.cell_slots && worker < self.worker_slots);
        let held = self.load_start() + self.cell_slots * CELL_WORDS;
        self.word(held + cell * self.worker_slots + worker)
    }

    /// The process owning worker record `worker` (`process::me`'s identity; 0: free).
    pub(super) fn worker_word(&self, worker: usize) -> &AtomicU64 {
        assert!(worker < self.worker_slots);
        let workers = self.load_start() + self.cell_slots * (CELL_WORDS + self.worker_slots);
        self.word(workers + worker)
    }

    /// The zone's counters.
    pub fn counters(&self) -> ZoneCounters {
        ZoneCounters {
            evicted_tokens: self.word(H_EVICTED_TOKENS).load(SeqCst),
            evicted_cutoffs: self.word(H_EVICTED_CUTOFFS).load(SeqCst),
            evicted_quotas: self.word(H_EVICTED_QUOTAS).load(SeqCst),
            lock_takeovers: self.word(H_LOCK_TAKEOVERS).load(SeqCst),
            reclaimed_slots: self.word(H_RECLAIMED_SLOTS).load(SeqCst),
            reclaimed_workers: self.word(H_RECLAIMED_WORKERS).load(SeqCst),
        }
    }

    /// The word at `index` of the mapping.
    pub(super) fn word(&self, index: usize) -> &AtomicU64 {
        assert!(
            (index + 1) * 8 <= self.map.len(),
            "zone word {index} out of range"
        );
        // SAFETY: the mapping is page-aligned, at least this long (checked above, and the file
        // is never truncated while mapped), and only ever accessed through atomics.
        unsafe { &*(self.map.as_mut_ptr().add(index * 8) as *const AtomicU64) }
    }

    fn slots(&self, table: Table) -> usize {
        match table {
            Table::Tokens | Table::Cutoffs => self.revocation_slots,
            Table::Quotas => self.quota_slots,
        }
    }

    fn table_start(&self, table: Table) -> usize {
        let revocations = self.revocation_slots * SLOT_WORDS;
        HEADER_WORDS
            + match table {
                Table::Tokens => 0,
                Table::Cutoffs => revocations,
                Table::Quotas => 2 * revocations,
            }
    }

    /// Word `field` (0..4) of slot `slot` of `table`.
    pub(super) fn field(&self, table: Table, slot: usize, field: usize) -> &AtomicU64 {
        self.word(self.table_start(table) + slot * SLOT_WORDS + field)
    }

    /// The slots `key` may live in, from its home slot on.
    pub(super) fn window(&self, table: Table, key: Key) -> impl Iterator<Item = usize> {
        let slots = self.slots(table);
        let home = (key.1 % slots as u64) as usize;
        (0..WINDOW).map(move |i| (home + i) % slots)
    }

    /// The slot holding `key` and its two values, read without locking; None if absent (or
    /// being written).
    pub(super) fn find(&self, table: Table, key: Key) -> Option<(usize, u64, u64)> {
        self.window(table, key)
            .find_map(|slot| Some((slot, self.read(table, slot, key)?)))
            .map(|(slot, (a, b))| (slot, a, b))
    }

    /// Slot `slot`'s two values if it holds `key`, checked before and after they are read.
    pub(super) fn read(&self, table: Table, slot: usize, key: Key) -> Option<(u64, u64)> {
        if self.field(table, slot, 0).load(SeqCst) != key.0 {
            return None;
        }
        let lo = self.field(table, slot, 1).load(SeqCst);
        let a = self.field(table, slot, 2).load(SeqCst);
        let b = self.field(table, slot, 3).load(SeqCst);
        let hi = self.field(table, slot, 0).load(SeqCst);
        (hi == key.0 && lo == key.1).then_some((a, b))
    }

    /// Writes `key` and its values into `slot` (under the writer lock): emptied first, the key
    /// written last.
    pub(super) fn write(
        &self,
        _guard: &WriterGuard<'_>,
        table: Table,
        slot: usize,
        key: Key,
        a: u64,
        b: u64,
    ) {
        self.field(table, slot, 0).store(0, SeqCst);
        self.field(table, slot, 1).store(key.1, SeqCst);
        self.field(table, slot, 2).store(a, SeqCst);
        self.field(table, slot, 3).store(b, SeqCst);
        self.field(table, slot, 0).store(key.0, SeqCst);
    }

    /// Empties `slot` (under the writer lock).
    pub(super) fn clear(&self, _guard: &WriterGuard<'_>, table: Table, slot: usize) {
        self.field(table, slot, 0).store(0, SeqCst);
    }

    /// Where `key` goes in `table` (under the writer lock): its own slot, else an empty one, else
    /// the first for which `free` says its values hold nothing, else the one `rank` puts first
    /// (smallest), which is counted as an eviction. The slot and whether `key` was already there.
    pub(super) fn place(
        &self,
        _guard: &WriterGuard<'_>,
        table: Table,
        key: Key,
        free: impl Fn(u64, u64) -> bool,
        rank: impl Fn(u64, u64) -> u64,
    ) -> (usize, bool) {
        if let Some((slot, _, _)) = self.find(table, key) {
            return (slot, true);
        }
        let mut victim: Option<(u64, usize)> = None;
        for slot in self.window(table, key) {
            let hi = self.field(table, slot, 0).load(SeqCst);
            let a = self.field(table, slot, 2).load(SeqCst);
            let b = self.field(table, slot, 3).load(SeqCst);
            if hi == 0 || free(a, b) {
                return (slot, false);
            }
            let order = rank(a, b);
            if victim.is_none_or(|(best, _)| order < best) {
                victim = Some((order, slot));
            }
        }
        let counter = match table {
            Table::Tokens => H_EVICTED_TOKENS,
            Table::Cutoffs => H_EVICTED_CUTOFFS,
            Table::Quotas => H_EVICTED_QUOTAS,
        };
        self.word(counter).fetch_add(1, SeqCst);
        (victim.expect("a window has slots").1, false)
    }

    /// Every occupied slot's two values in `table` (for counts).
    pub(super) fn occupied(&self, table: Table) -> impl Iterator<Item = (u64, u64)> + '_ {
        (0..self.slots(table)).filter_map(move |slot| {
            let hi = self.field(table, slot, 0).load(SeqCst);
            (hi != 0).then(|| {
                (
                    self.field(table, slot, 2).load(SeqCst),
                    self.field(table, slot, 3).load(SeqCst),
                )
            })
        })
    }

    /// Takes the writer lock, taking it over from a holder that has died.
    pub(super) fn lock(&self) -> WriterGuard<'_> {
        let me = super::process::me();
        let writer = self.word(H_WRITER);
        let mut spins: u32 = 0;
        loop {
            match writer.compare_exchange(0, me, SeqCst, SeqCst) {
                Ok(_) => return WriterGuard(self, me),
                Err(holder) => {
                    spins = spins.wrapping_add(1);
                    if holder != me && spins.is_multiple_of(64) && !super::process::alive(holder) {
                        if writer.compare_exchange(holder, me, SeqCst, SeqCst).is_ok() {
                            self.word(H_LOCK_TAKEOVERS).fetch_add(1, SeqCst);
                            return WriterGuard(self, me);
                        }
                    } else if spins > 16 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
    }

    /// Sets the writer lock to `pid`, as a process killed holding it would leave it (tests).
    pub fn leave_locked_by(&self, pid: u64) {
        self.word(H_WRITER).store(pid, SeqCst);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn sizes(revocation_slots: u64, quota_slots: u64) -> ZoneSizes {
        ZoneSizes {
            revocation_slots,
            quota_slots,
            cell_slots: 4,
            worker_slots: 4,
        }
    }

    pub(crate) fn temp_path(name: &str) -> String {
        let dir = std::env::temp_dir();
        format!(
            "{}/cellgate-test-{}-{name}.zone",
            dir.display(),
            std::process::id()
        )
    }

    #[test]
    fn a_zone_of_another_layout_is_refused() {
        let path = temp_path("layout");
        Zone::create(&path, sizes(64, 64)).unwrap();
        assert!(Zone::open(&path).is_ok());
        let zone = Zone::open(&path).unwrap();
        zone.word(H_VERSION).store(VERSION + 1, SeqCst);
        let error = Zone::open(&path).err().unwrap();
        assert!(
            error.contains(&format!("layout version {}", VERSION + 1)),
            "{error}"
        );
        zone.word(H_VERSION).store(VERSION, SeqCst);
        zone.word(H_QUOTA_SLOTS).store(128, SeqCst);
        let error = Zone::open(&path).err().unwrap();
        assert!(error.contains("is not that of its tables"), "{error}");
        zone.word(H_MAGIC).store(7, SeqCst);
        assert!(Zone::open(&path).err().unwrap().contains("bad magic"));
        std::fs::write(&path, b"short").unwrap();
        assert!(Zone::open(&path).err().unwrap().contains("too short"));
        assert!(Zone::create(&path, sizes(4, 64))
            .err()
            .unwrap()
            .contains("revocation_slots"));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn keys_are_compared_in_full() {
        let path = temp_path("keys");
        let zone = Zone::create(&path, sizes(64, 64)).unwrap();
        let a = key_of("alice");
        // Same home slot and same top word, other bottom word: a different key.
        let b = (a.0, a.1.wrapping_add(64));
        let guard = zone.lock();
        let (slot, _) = zone.place(&guard, Table::Quotas, a, |_, _| false, |a, _| a);
        zone.write(&guard, Table::Quotas, slot, a, 5, 0);
        drop(guard);
        assert_eq!(zone.find(Table::Quotas, a), Some((slot, 5, 0)));
        assert_eq!(zone.find(Table::Quotas, b), None);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_full_window_evicts_the_smallest_rank_and_counts_it() {
        let path = temp_path("evict");
        let zone = Zone::create(&path, sizes(64, 64)).unwrap();
        // WINDOW + 1 keys sharing one home slot (same low word modulo 64).
        let keys: Vec<Key> = (0..=WINDOW as u64)
            .map(|i| ((i << 1) | 1, 64 * i))
            .collect();
        for (i, key) in keys.iter().enumerate() {
            let guard = zone.lock();
            let (slot, there) = zone.place(&guard, Table::Quotas, *key, |_, _| false, |a, _| a);
            assert!(!there);
            zone.write(&guard, Table::Quotas, slot, *key, 100 + i as u64, 0);
        }
        assert_eq!(zone.counters().evicted_quotas, 1);
        assert_eq!(zone.find(Table::Quotas, keys[0]), None, "the smallest went");
        for key in &keys[1..] {
            assert!(zone.find(Table::Quotas, *key).is_some());
        }
        // A slot whose values say it holds nothing is taken before anything is evicted.
        let guard = zone.lock();
        let (slot, _) = zone.place(&guard, Table::Quotas, keys[0], |a, _| a <= 101, |a, _| a);
        assert_eq!(zone.read(Table::Quotas, slot, keys[1]), Some((101, 0)));
        drop(guard);
        assert_eq!(zone.counters().evicted_quotas, 1);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_lock_left_by_a_dead_process_is_taken_over() {
        let path = temp_path("lock");
        let zone = Zone::create(&path, sizes(64, 64)).unwrap();
        // A pid far above pid_max: no such process.
        zone.leave_locked_by(u64::from(i32::MAX as u32 - 1));
        drop(zone.lock());
        assert_eq!(zone.counters().lock_takeovers, 1);
        drop(zone.lock());
        assert_eq!(zone.counters().lock_takeovers, 1);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_holder_taken_for_dead_does_not_free_its_successors_lock() {
        let path = temp_path("lock-successor");
        let zone = Zone::create(&path, sizes(64, 64)).unwrap();
        let mine = zone.lock();
        // Another process took the lock over while this one looked dead.
        zone.leave_locked_by(7);
        drop(mine);
        assert_eq!(zone.word(H_WRITER).load(SeqCst), 7);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_write_cut_short_leaves_an_empty_slot() {
        let path = temp_path("torn");
        let zone = Zone::create(&path, sizes(64, 64)).unwrap();
        let key = key_of("bob");
        let guard = zone.lock();
        let (slot, _) = zone.place(&guard, Table::Tokens, key, |_, _| false, |a, _| a);
        zone.write(&guard, Table::Tokens, slot, key, 9, 0);
        // A writer killed after its first store: key_hi is 0, the rest half-written.
        zone.field(Table::Tokens, slot, 0).store(0, SeqCst);
        zone.field(Table::Tokens, slot, 2).store(77, SeqCst);
        assert_eq!(zone.find(Table::Tokens, key), None);
        assert_eq!(
            zone.place(&guard, Table::Tokens, key, |_, _| false, |a, _| a),
            (slot, false)
        );
        drop(guard);
        std::fs::remove_file(&path).unwrap();
    }
}
