//! The writer thread of one worker's chain: records in, lines chained and appended in batches
//! (one write and, in strict mode, one fsync per batch: group commit), digests signed on
//! schedule, at rotation and at stop, old segments retired.
//!
//! A batch that cannot be written is cut back off the segment and kept to be written again; the
//! trail is `failed` meanwhile, and strict answers waiting on it are told so (503).

use crate::audit::digest::{Coverage, DigestLog};
use crate::audit::hex_into;
use crate::audit::record::{Event, Record};
use crate::audit::recovery::{self, Claimed};
use crate::audit::segment::{self, Segment};
use crate::audit::settings::Durability;
use crate::audit::sha256;
use crate::audit::time::{hour_of, timestamp};
use crate::audit::trail::{Shared, Submitted, FAILED, HEALTHY};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How long a failed trail waits before it tries to write again.
const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Buffered mode: while records keep coming the writer looks for them this often, unwoken, so
/// a request costs its producer no wake-up; idle, it sleeps until woken.
const BUFFERED_POLL: Duration = Duration::from_millis(5);

/// Strict mode under load (a batch of more than one record): the writer lets this long pass
/// before the batch's fsync, so that one fsync serves every record that arrives meanwhile
/// (PostgreSQL's commit_delay): fewer fsyncs and wake-ups per request, a little latency.
const GROUP_COMMIT_DELAY: Duration = Duration::from_micros(400);

/// The records of the open segment that no digest covers yet.
#[derive(Debug, Clone)]
struct Uncovered {
    first_seq: u64,
    first_time: String,
    last_seq: u64,
    last_time: String,
    last_hash: [u8; 32],
}

pub struct Writer {
    shared: Arc<Shared>,
    claimed: Claimed,
    /// The chain's last record: seq and line hash.
    seq: u64,
    prev: [u8; 32],
    segment: Option<Segment>,
    digests: DigestLog,
    /// Records taken from the queue and not yet written.
    pending: Vec<Submitted>,
    uncovered: Option<Uncovered>,
    since_digest: u64,
    lost_reported: u64,
    unsynced: bool,
    last_sync: Instant,
    last_digest: Instant,
    retry_at: Option<Instant>,
    /// Whether the last look at the queue found records.
    busy: bool,
}

fn io_error(what: &str, err: io::Error) -> String {
    format!("audit: {what}: {err}")
}

impl Writer {
    /// Takes the worker's chain and resumes it, closing what a crash left open.
    pub fn open(shared: Arc<Shared>) -> Result<Self, String> {
        let root = std::path::PathBuf::from(&shared.settings.directory);
        let claimed =
            recovery::claim(&root).map_err(|e| io_error(&format!("{}", root.display()), e))?;
        let state =
            recovery::resume(&claimed.dir).map_err(|e| io_error("resuming the chain", e))?;
        let public = shared.signer.public_pem();
        let key_path = root.join("audit-key.pub");
        if fs::read_to_string(&key_path).ok().as_deref() != Some(public.as_str()) {
            fs::write(&key_path, &public).map_err(|e| io_error("audit-key.pub", e))?;
        }
        let mut digests = DigestLog::open(
            &claimed.dir.join("digests.jsonl"),
            claimed.chain,
            state.digest_number,
            state.digest_prev,
            state.digest_len,
        )
        .map_err(|e| io_error("digests.jsonl", e))?;
        if let Some(recovery) = &state.recovery {
            let time = timestamp(shared.clock.now_us());
            digests
                .records(&shared.signer, &time, recovery)
                .map_err(|e| io_error("the recovery digest", e))?;
            if let Some((after, torn)) = recovery.gap {
                eprintln!(
                    "cellgate audit: chain {} resumed after seq {after} in {} ({torn} torn bytes after it)",
                    claimed.chain, recovery.segment
                );
            }
        }
        shared
            .chain
            .store(u64::from(claimed.chain), Ordering::Relaxed);
        let now = Instant::now();
        Ok(Writer {
            shared,
            claimed,
            seq: state.seq,
            prev: state.prev,
            segment: None,
            digests,
            pending: Vec::new(),
            uncovered: None,
            since_digest: 0,
            lost_reported: 0,
            unsynced: false,
            last_sync: now,
            last_digest: now,
            retry_at: None,
            busy: false,
        })
    }

    /// The thread's loop, until the trail stops.
    pub fn run(mut self) {
        loop {
            let (batch, stop) = self.wait();
            self.busy = !batch.is_empty();
            let loaded = batch.len() > 1;
            self.take(batch);
            if loaded && !stop && self.shared.settings.durability == Durability::Strict {
                std::thread::sleep(GROUP_COMMIT_DELAY);
                let (more, _) = self.take_queued();
                self.take(more);
            }
            self.write_pending();
            self.housekeeping(stop);
            if stop {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !self.pending.is_empty() && Instant::now() < deadline {
                    std::thread::sleep(RETRY_AFTER);
                    self.retry_at = None;
                    self.write_pending();
                }
                if !self.pending.is_empty() {
                    eprintln!(
                        "cellgate audit: {} records could not be written at stop",
                        self.pending.len()
                    );
                }
                self.close_segment();
                return;
            }
        }
    }

    /// Waits for records, the stop, or the next thing due; takes what is queued.
    fn wait(&mut self) -> (Vec<Submitted>, bool) {
        let settings = &self.shared.settings;
        let now = Instant::now();
        let mut due: Option<Instant> = None;
        let mut consider = |at: Instant| due = Some(due.map_or(at, |d| d.min(at)));
        if self.unsynced {
            consider(self.last_sync + Duration::from_millis(settings.flush_interval_ms));
        }
        if self.uncovered.is_some() || self.lost_now() > 0 {
            consider(self.last_digest + Duration::from_secs(settings.digest_every_s));
        }
        if let Some(at) = self.retry_at.filter(|_| !self.pending.is_empty()) {
            consider(at);
        }
        let mut queue = match self.shared.queue.lock() {
            Ok(queue) => queue,
            Err(poisoned) => poisoned.into_inner(),
        };
        if queue.records.is_empty() && !queue.stop {
            let mut timeout = due.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(now)
            });
            // Busy in buffered mode (the last look found records): poll, unwoken.
            let polling = settings.durability == Durability::Buffered && self.busy;
            if polling {
                timeout = timeout.min(BUFFERED_POLL);
            }
            if !timeout.is_zero() {
                queue.writer_asleep = !polling;
                queue = match self.shared.wake.wait_timeout(queue, timeout) {
                    Ok((queue, _)) => queue,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                queue.writer_asleep = false;
            }
        }
        (std::mem::take(&mut queue.records), queue.stop)
    }

    /// Adds `batch` to the records to write. A record that holds no place in the queue (taken
    /// fail-open while the trail could not write) is lost, and counted, once the records waiting
    /// fill the queue's bound: memory stays bounded however long the disk stays full.
    fn take(&mut self, batch: Vec<Submitted>) {
        let bound = self.shared.settings.queue_records;
        for submitted in batch {
            if !submitted.reserved && self.pending.len() >= bound {
                self.shared.lose(submitted.durable);
                continue;
            }
            self.pending.push(submitted);
        }
    }

    /// Whatever is queued now, without waiting.
    fn take_queued(&self) -> (Vec<Submitted>, bool) {
        let mut queue = match self.shared.queue.lock() {
            Ok(queue) => queue,
            Err(poisoned) => poisoned.into_inner(),
        };
        (std::mem::take(&mut queue.records), queue.stop)
    }

    fn lost_now(&self) -> u64 {
        self.shared.lost.load(Ordering::Relaxed) - self.lost_reported
    }

    /// Whether `time_us` must open a new segment.
    fn must_rotate(&self, segment: &Segment, time_us: u64) -> bool {
        let settings = &self.shared.settings;
        (settings.rotate_hourly && hour_of(time_us) != segment.hour)
            || segment.len >= settings.rotate_bytes
    }

    /// Writes the pending records, run by run (a run stays in one segment).
    fn write_pending(&mut self) {
        if self.pending.is_empty() || self.retry_at.is_some_and(|at| Instant::now() < at) {
            return;
        }
        let mut done = 0;
        while done < self.pending.len() {
            match self.write_run(done) {
                Ok(end) => done = end,
                Err(err) => {
                    self.fail(&err, done);
                    self.pending.drain(..done);
                    return;
                }
            }
        }
        self.pending.clear();
        self.retry_at = None;
        let _ = self.shared.state.compare_exchange(
            FAILED,
            HEALTHY,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    /// Writes the run of pending records from `start` that fits the open segment; returns where
    /// it ended.
    fn write_run(&mut self, start: usize) -> Result<usize, String> {
        let first_time = self.pending[start].record.time_us;
        if let Some(segment) = &self.segment {
            if self.must_rotate(segment, first_time) {
                self.sync().map_err(|e| io_error("fsync", e))?;
                self.close_segment_checked()?;
            }
        }
        if self.segment.is_none() {
            let segment = Segment::create(&self.claimed.dir, self.seq + 1, first_time)
                .map_err(|e| io_error("a new segment", e))?;
            self.segment = Some(segment);
        }
        let segment = self.segment.as_ref().expect("opened above");
        let (len, hash, hour) = (segment.len, segment.hash_state(), segment.hour);
        let rotate_bytes = self.shared.settings.rotate_bytes;
        let (seq, prev, uncovered) = (self.seq, self.prev, self.uncovered.clone());
        let mut bytes = Vec::with_capacity(512 * (self.pending.len() - start));
        let mut end = start;
        while end < self.pending.len() {
            let time_us = self.pending[end].record.time_us;
            let full = len + bytes.len() as u64 >= rotate_bytes;
            let new_hour = self.shared.settings.rotate_hourly && hour_of(time_us) != hour;
            if end > start && (full || new_hour) {
                break;
            }
            let time = timestamp(time_us);
            let line = self.line(&self.pending[end].record, &time);
            self.chain(&line, time);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            end += 1;
        }
        let strict = self.shared.settings.durability == Durability::Strict;
        let segment = self.segment.as_mut().expect("opened above");
        let written = segment
            .append(&bytes)
            .and_then(|()| if strict { segment.sync() } else { Ok(()) });
        if let Err(err) = written {
            let _ = segment.truncate(len, hash);
            (self.seq, self.prev, self.uncovered) = (seq, prev, uncovered);
            return Err(io_error("writing records", err));
        }
        if strict {
            self.last_sync = Instant::now();
        } else {
            self.unsynced = true;
        }
        let count = (end - start) as u64;
        self.since_digest += count;
        self.shared.written.fetch_add(count, Ordering::Relaxed);
        for submitted in self.pending[start..end].iter_mut() {
            if submitted.reserved {
                self.shared.reserved.fetch_sub(1, Ordering::AcqRel);
                submitted.reserved = false;
            }
            if let Some(durable) = submitted.durable.take() {
                durable(true);
            }
        }
        Ok(end)
    }

    /// The line of `record` after the chain's last: header fields, then the record's own.
    fn line(&self, record: &Record, time: &str) -> String {
        let mut line = String::with_capacity(640);
        let _ = write!(
            line,
            "{{\"v\":1,\"chain\":{},\"seq\":{},\"time\":\"{time}\",\"prev\":\"",
            self.claimed.chain,
            self.seq + 1,
        );
        hex_into(&mut line, &self.prev);
        line.push_str("\",\"event\":");
        record.write_body(&mut line, &self.shared.names, &self.shared.privacy);
        line
    }

    /// Moves the chain past `line`.
    fn chain(&mut self, line: &str, time: String) {
        self.seq += 1;
        self.prev = sha256(line.as_bytes());
        match &mut self.uncovered {
            Some(range) => {
                range.last_seq = self.seq;
                range.last_time = time;
                range.last_hash = self.prev;
            }
            None => {
                self.uncovered = Some(Uncovered {
                    first_seq: self.seq,
                    first_time: time.clone(),
                    last_seq: self.seq,
                    last_time: time,
                    last_hash: self.prev,
                })
            }
        }
    }

    /// The trail cannot write: failed until a retry succeeds; strict answers waiting on the
    /// records from `from` are told (503), and their records say so when written.
    fn fail(&mut self, err: &str, from: usize) {
        if self.shared.state.swap(FAILED, Ordering::AcqRel) != FAILED {
            eprintln!(
                "cellgate audit: {err}; refusing requests (audit_unavailable) until it recovers"
            );
        }
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        for submitted in self.pending[from..].iter_mut() {
            if let Some(durable) = submitted.durable.take() {
                match &mut submitted.record.event {
                    Event::Request(request) => {
                        request.status = 503;
                        request.reason = Some("audit_unavailable");
                    }
                    Event::Admin(admin) => {
                        admin.status = 503;
                        admin.reason = Some("audit_unavailable".into());
                    }
                }
                durable(false);
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            if let Some(segment) = &self.segment {
                segment.sync()?;
            }
            self.unsynced = false;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// The fsync and the digest that are due.
    fn housekeeping(&mut self, stop: bool) {
        let shared = self.shared.clone();
        let settings = &shared.settings;
        let now = Instant::now();
        if self.unsynced
            && (stop || now >= self.last_sync + Duration::from_millis(settings.flush_interval_ms))
        {
            if let Err(err) = self.sync() {
                self.fail(&io_error("fsync", err), self.pending.len());
            }
        }
        let due = self.since_digest >= settings.digest_every_records
            || now >= self.last_digest + Duration::from_secs(settings.digest_every_s);
        if !stop && due && !self.unsynced && (self.uncovered.is_some() || self.lost_now() > 0) {
            if let Err(err) = self.digest(false) {
                self.fail(&err, self.pending.len());
            }
        }
    }

    /// Signs a digest of the open segment's uncovered records.
    fn digest(&mut self, last: bool) -> Result<(), String> {
        let Some(segment) = &self.segment else {
            return Ok(());
        };
        let lost = self.lost_now();
        let coverage = Coverage {
            segment: segment.name.clone(),
            range: self.uncovered.as_ref().map(|u| {
                (
                    u.first_seq,
                    u.last_seq,
                    u.first_time.clone(),
                    u.last_time.clone(),
                    u.last_hash,
                )
            }),
            segment_bytes: segment.len,
            segment_sha256: segment.sha256(),
            last,
            lost,
            gap: None,
        };
        let time = timestamp(self.shared.clock.now_us());
        self.digests
            .records(&self.shared.signer, &time, &coverage)
            .map_err(|e| io_error("writing a digest", e))?;
        self.uncovered = None;
        self.since_digest = 0;
        if lost > 0 {
            eprintln!(
                "cellgate audit: {lost} records lost (fail-open) since the previous digest of chain {}; reported in digest {}",
                self.claimed.chain,
                self.digests.number()
            );
        }
        self.lost_reported += lost;
        self.last_digest = Instant::now();
        Ok(())
    }

    fn close_segment_checked(&mut self) -> Result<(), String> {
        self.sync().map_err(|e| io_error("fsync", e))?;
        self.digest(true)?;
        self.segment = None;
        self.retire();
        Ok(())
    }

    /// Closes the open segment with its final digest, at stop.
    fn close_segment(&mut self) {
        if self.segment.is_some() {
            if let Err(err) = self.close_segment_checked() {
                eprintln!("cellgate audit: closing the segment: {err}");
            }
        }
    }

    /// Removes the closed segments past the retention policy, after signing that it did.
    fn retire(&mut self) {
        let settings = &self.shared.settings;
        if settings.retention_s.is_none() && settings.retention_bytes.is_none() {
            return;
        }
        let Ok(segments) = segment::list(&self.claimed.dir) else {
            return;
        };
        let dir = &self.claimed.dir;
        let sized: Vec<(String, u64, Option<SystemTime>)> = segments
            .into_iter()
            .filter_map(|(name, _)| {
                let meta = fs::metadata(dir.join(&name)).ok()?;
                Some((name, meta.len(), meta.modified().ok()))
            })
            .collect();
        let mut total: u64 = sized.iter().map(|(_, len, _)| len).sum();
        let oldest_kept = settings
            .retention_s
            .and_then(|age| SystemTime::now().checked_sub(Duration::from_secs(age)));
        let mut removed = Vec::new();
        for (name, len, modified) in &sized {
            let too_old = matches!((oldest_kept, modified), (Some(limit), Some(m)) if *m < limit);
            let too_big = settings.retention_bytes.is_some_and(|max| total > max);
            if !(too_old || too_big) {
                break;
            }
            removed.push(name.clone());
            total -= len;
        }
        if removed.is_empty() {
            return;
        }
        let time = timestamp(self.shared.clock.now_us());
        if self
            .digests
            .retention(&self.shared.signer, &time, &removed)
            .is_ok()
        {
            for name in &removed {
                let _ = fs::remove_file(dir.join(name));
            }
        }
    }
}
