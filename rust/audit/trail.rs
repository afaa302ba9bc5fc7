//! The trail as the request path sees it: a ticket taken before a request is served (so a full
//! or failed trail refuses it instead of serving it unaudited), and the record handed over once
//! the request is answered.

use crate::audit::digest::DigestSigner;
use crate::audit::privacy::Privacy;
use crate::audit::record::{Names, Record};
use crate::audit::settings::{AuditSettings, Durability, OnFailure};
use crate::audit::writer;
use crate::clock::Clock;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

/// Told once the record is durable (true) or could not be made so (false).
pub type Durable = Box<dyn FnOnce(bool) + Send>;

/// A record handed to the writer.
pub struct Submitted {
    pub record: Record,
    pub durable: Option<Durable>,
    /// Whether it holds one of the queue's places.
    pub reserved: bool,
}

pub const NOT_STARTED: u8 = 0;
pub const HEALTHY: u8 = 1;
pub const FAILED: u8 = 2;
pub const STOPPED: u8 = 3;

/// What the request threads and the writer share.
pub struct Shared {
    pub settings: AuditSettings,
    pub names: Names,
    pub privacy: Privacy,
    pub signer: DigestSigner,
    pub clock: Clock,
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
    pub state: AtomicU8,
    /// Places taken in the queue: tickets out plus records not yet written.
    pub reserved: AtomicUsize,
    /// Records lost (fail-open only) since the trail started, and requests refused 503
    /// audit_unavailable.
    pub lost: AtomicU64,
    pub refused: AtomicU64,
    /// Records written, and the chain this worker took (u32::MAX until started).
    pub written: AtomicU64,
    pub chain: AtomicU64,
}

impl Shared {
    /// Counts a fail-open record that found no room (in the queue, or behind a stalled disk)
    /// as lost, and releases a strict answer waiting on it.
    pub fn lose(&self, durable: Option<Durable>) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        if let Some(durable) = durable {
            durable(true);
        }
    }
}

#[derive(Default)]
pub struct Queue {
    pub records: Vec<Submitted>,
    pub stop: bool,
    /// Whether the writer waits for a wake-up; a writer that is busy, or polling on a short
    /// interval (buffered mode), finds new records without one, so producers spare the syscall.
    pub writer_asleep: bool,
}

/// The trail cannot take a record now: the request is answered 503 audit_unavailable.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

/// The right to one record, taken before the request is served.
pub struct Ticket {
    shared: Arc<Shared>,
    reserved: bool,
}

impl Ticket {
    /// Hands the record over. `durable` is told when it is on disk (strict mode; None else).
    pub fn submit(self, record: Record, durable: Option<Durable>) {
        let shared = &self.shared;
        let reserved = self.reserved;
        let mut queue = match shared.queue.lock() {
            Ok(queue) => queue,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Fail-open past the queue's bound: the record is lost, and counted.
        if !reserved && queue.records.len() >= shared.settings.queue_records {
            drop(queue);
            shared.lose(durable);
            return;
        }
        queue.records.push(Submitted {
            record,
            durable,
            reserved,
        });
        let wake = std::mem::take(&mut queue.writer_asleep);
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Whether the answer must wait for the record to be durable.
    pub fn strict(&self) -> bool {
        self.shared.settings.durability == Durability::Strict && self.reserved
    }
}

/// One worker's trail.
pub struct Trail {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Trail {
    /// Compiles `settings`; nothing is opened until `start`.
    pub fn build(settings: AuditSettings, names: Names, clock: Clock) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let decode = |field: &str, text: &str| {
            STANDARD
                .decode(text)
                .map_err(|err| format!("audit.{field}: not base64 ({err})"))
        };
        let hash_key = match settings
            .hash_key_b64
            .as_deref()
            .map(|k| decode("hash_key", k))
        {
            Some(Err(err)) => {
                errors.push(err);
                None
            }
            Some(Ok(key)) => Some(key),
            None => None,
        };
        let privacy = Privacy::new(
            settings.client_address,
            settings.user_agent,
            hash_key.as_deref(),
        )
        .map_err(|err| errors.push(err))
        .ok();
        let signer = decode("signing_key", &settings.signing_key_b64)
            .and_then(|der| DigestSigner::from_pkcs8(&der))
            .map_err(|err| errors.push(err))
            .ok();
        if settings.queue_records == 0 {
            errors.push("audit.queue_records: must be > 0".into());
        }
        let (Some(privacy), Some(signer), true) = (privacy, signer, errors.is_empty()) else {
            return Err(errors);
        };
        Ok(Trail {
            shared: Arc::new(Shared {
                settings,
                names,
                privacy,
                signer,
                clock,
                queue: Mutex::new(Queue::default()),
                wake: Condvar::new(),
                state: AtomicU8::new(NOT_STARTED),
                reserved: AtomicUsize::new(0),
                lost: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                written: AtomicU64::new(0),
                chain: AtomicU64::new(u64::from(u32::MAX)),
            }),
            thread: Mutex::new(None),
        })
    }

    /// Takes this worker's chain, resumes it and starts the writer thread (idempotent).
    pub fn start(&self) -> Result<(), String> {
        let mut thread = self
            .thread
            .lock()
            .map_err(|_| "audit: poisoned".to_owned())?;
        if thread.is_some() {
            return Ok(());
        }
        let writer = writer::Writer::open(self.shared.clone())?;
        {
            let mut queue = self
                .shared
                .queue
                .lock()
                .map_err(|_| "audit: poisoned".to_owned())?;
            queue.stop = false;
        }
        self.shared.state.store(HEALTHY, Ordering::Release);
        let spawned = std::thread::Builder::new()
            .name("cellgate-audit".into())
            .spawn(move || writer.run())
            .map_err(|err| format!("audit: cannot start the writer thread: {err}"))?;
        *thread = Some(spawned);
        Ok(())
    }

    /// Writes and signs everything queued, closes the segment, and stops the writer.
    pub fn stop(&self) {
        let Ok(mut thread) = self.thread.lock() else {
            return;
        };
        let Some(handle) = thread.take() else {
            return;
        };
        if let Ok(mut queue) = self.shared.queue.lock() {
            queue.stop = true;
        }
        self.shared.wake.notify_one();
        let _ = handle.join();
        self.shared.state.store(STOPPED, Ordering::Release);
    }

    /// A ticket for one record, or Unavailable (fail-closed) when the trail cannot take one.
    pub fn ticket(&self) -> Result<Ticket, Unavailable> {
        let shared = &self.shared;
        let healthy = shared.state.load(Ordering::Acquire) == HEALTHY;
        let taken = healthy
            && shared
                .reserved
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < shared.settings.queue_records).then_some(n + 1)
                })
                .is_ok();
        if taken {
            return Ok(Ticket {
                shared: shared.clone(),
                reserved: true,
            });
        }
        match shared.settings.on_failure {
            OnFailure::FailOpen => Ok(Ticket {
                shared: shared.clone(),
                reserved: false,
            }),
            OnFailure::FailClosed => {
                shared.refused.fetch_add(1, Ordering::Relaxed);
                Err(Unavailable)
            }
        }
    }

    /// `(state, chain, written, lost, refused, queued)` for the admin API and tests.
    pub fn status(&self) -> (&'static str, Option<u32>, u64, u64, u64, usize) {
        let s = &self.shared;
        let state = match s.state.load(Ordering::Acquire) {
            HEALTHY => "healthy",
            FAILED => "failed",
            STOPPED => "stopped",
            _ => "not_started",
        };
        let chain = u32::try_from(s.chain.load(Ordering::Relaxed))
            .ok()
            .filter(|c| *c != u32::MAX);
        (
            state,
            chain,
            s.written.load(Ordering::Relaxed),
            s.lost.load(Ordering::Relaxed),
            s.refused.load(Ordering::Relaxed),
            s.reserved.load(Ordering::Relaxed),
        )
    }

    /// The public key that verifies this trail's digests, PEM.
    pub fn public_key_pem(&self) -> String {
        self.shared.signer.public_pem()
    }
}

impl Drop for Trail {
    fn drop(&mut self) {
        self.stop();
    }
}
