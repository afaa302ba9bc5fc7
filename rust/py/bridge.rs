//! How a finished forward reaches the asyncio loop, in one place.
//!
//! A bridge belongs to one event loop. Forwards run on the worker's tokio thread
//! (`runtime.rs`); each one that finishes is queued here with its future, and the first of a
//! batch makes the bridge's descriptor readable (a mio poll with one waker in it). The loop
//! watches that descriptor and calls `Bridge.drain`, which resolves every future finished since,
//! in one turn: many completions per wake-up of the loop.

use crate::forward::Answer;
use crate::py::decision::{problem_triple, response_triple};
use crate::reason::{Reason, Refusal};
use crate::trace::TraceContext;
use hyper::header::HeaderValue;
use mio::{Events, Poll, Token};
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const WAKE: Token = Token(0);

/// What a future is resolved with.
pub enum Outcome {
    /// The cell answered; `fields` are the gateway's own response fields (RateLimit).
    Answer {
        answer: Answer,
        request_id: String,
        fields: Vec<(&'static str, String)>,
    },
    /// The forward failed; the client gets the problem+json.
    Refused {
        refusal: Refusal,
        request_id: String,
        trace: Option<TraceContext>,
    },
    /// Nothing: resolves the future with None (the bridge measured alone).
    Nothing,
}

impl Outcome {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Outcome::Answer {
                answer,
                request_id,
                fields,
            } => {
                let headers = answer
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), header_text(value)))
                    .chain(std::iter::once((
                        "x-request-id",
                        request_id.as_str().into(),
                    )))
                    .chain(
                        fields
                            .iter()
                            .map(|(name, value)| (*name, value.as_str().into())),
                    );
                Ok(response_triple(py, answer.status, headers, &answer.body)?
                    .unbind()
                    .into_any())
            }
            Outcome::Refused {
                refusal,
                request_id,
                trace,
            } => Ok(problem_triple(py, &refusal, &request_id, trace.as_ref())?
                .unbind()
                .into_any()),
            Outcome::Nothing => Ok(py.None()),
        }
    }
}

/// A header value as text: as it is when it is visible ASCII (nearly always), else lossily.
fn header_text(value: &HeaderValue) -> Cow<'_, str> {
    match value.to_str() {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(value.as_bytes()),
    }
}

/// Futures whose outcome is known, queued by the threads that made them, and the waker that
/// tells the loop.
struct Completions {
    done: Mutex<Vec<(Py<PyAny>, Outcome)>>,
    waker: mio::Waker,
    /// Futures handed out and not yet completed.
    pending: AtomicUsize,
    /// The forwards under way that can be cancelled, by their future's address.
    running: Mutex<HashMap<usize, Arc<Notify>>>,
}

impl Completions {
    fn push(&self, future: Py<PyAny>, outcome: Outcome) {
        self.pending.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut running) = self.running.lock() {
            running.remove(&(future.as_ptr() as usize));
        }
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        let first = done.is_empty();
        done.push((future, outcome));
        drop(done);
        if first {
            // A failed wake leaves the outcome to the loop's next drain.
            let _ = self.waker.wake();
        }
    }

    fn take(&self) -> Vec<(Py<PyAny>, Outcome)> {
        self.done
            .lock()
            .map(|mut done| std::mem::take(&mut *done))
            .unwrap_or_default()
    }
}

/// A future waiting for its outcome, which any thread may make. If its task ends without
/// completing it (a panic, a dropped task), dropping this completes it with a 500 problem, so
/// no request waits forever.
pub struct Pending {
    completions: Arc<Completions>,
    future: Option<Py<PyAny>>,
    request_id: String,
    trace: Option<TraceContext>,
}

impl Pending {
    /// Hands `outcome` to the loop, which resolves the future at its next drain.
    pub fn complete(mut self, outcome: Outcome) {
        if let Some(future) = self.future.take() {
            self.completions.push(future, outcome);
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            let refusal = Refusal::new(Reason::Internal, "the forward ended without an answer");
            let outcome = Outcome::Refused {
                refusal,
                request_id: std::mem::take(&mut self.request_id),
                trace: self.trace,
            };
            self.completions.push(future, outcome);
        }
    }
}

/// One event loop's end of the core: the descriptor it watches and the futures it resolves.
#[pyclass(name = "Bridge", unsendable, module = "cellgate._core")]
pub struct PyBridge {
    poll: RefCell<Poll>,
    events: RefCell<Events>,
    completions: Arc<Completions>,
    create_future: Py<PyAny>,
}

impl PyBridge {
    /// A new asyncio future of this loop and the handle that resolves it, from any thread.
    pub fn pending(
        &self,
        py: Python<'_>,
        request_id: String,
        trace: Option<TraceContext>,
    ) -> PyResult<(Py<PyAny>, Pending)> {
        let future = self.create_future.call0(py)?;
        self.completions.pending.fetch_add(1, Ordering::Relaxed);
        let pending = Pending {
            completions: self.completions.clone(),
            future: Some(future.clone_ref(py)),
            request_id,
            trace,
        };
        Ok((future, pending))
    }

    /// What tells the forward that will resolve `future` that `cancel(future)` was called:
    /// the forward stops at once when it is notified (a notification before it waits counts).
    pub fn cancellation(&self, future: &Py<PyAny>) -> Arc<Notify> {
        let cancel = Arc::new(Notify::new());
        if let Ok(mut running) = self.completions.running.lock() {
            running.insert(future.as_ptr() as usize, cancel.clone());
        }
        cancel
    }

    fn resolve(&self, py: Python<'_>) -> PyResult<()> {
        let set_result = intern!(py, "set_result");
        let mut first_error = None;
        for (future, outcome) in self.completions.take() {
            // A future cancelled meanwhile (the client went away) refuses a result; nobody
            // waits for it then.
            match outcome.into_py(py) {
                Ok(value) => {
                    let _ = future.call_method1(py, set_result, (value,));
                }
                Err(err) => {
                    let _ =
                        future.call_method1(py, intern!(py, "set_exception"), (err.clone_ref(py),));
                    first_error.get_or_insert(err);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[pymethods]
impl PyBridge {
    /// A bridge for `loop`; register it with `loop.add_reader(bridge.fileno(), bridge.drain)`.
    #[new]
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        let os_error = |err: std::io::Error| PyOSError::new_err(format!("bridge: {err}"));
        let poll = Poll::new().map_err(os_error)?;
        let waker = mio::Waker::new(poll.registry(), WAKE).map_err(os_error)?;
        Ok(PyBridge {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(8)),
            completions: Arc::new(Completions {
                done: Mutex::new(Vec::new()),
                waker,
                pending: AtomicUsize::new(0),
                running: Mutex::new(HashMap::new()),
            }),
            create_future: event_loop.getattr("create_future")?.unbind(),
        })
    }

    /// The descriptor that becomes readable when forwards have finished.
    fn fileno(&self) -> i32 {
        self.poll.borrow().as_raw_fd()
    }

    /// Resolves every future that finished. Call it from the loop's reader callback.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        // Takes the wake-up, so the descriptor stops being readable until the next batch.
        self.poll
            .borrow_mut()
            .poll(&mut self.events.borrow_mut(), Some(Duration::ZERO))
            .map_err(|err| PyOSError::new_err(format!("bridge: {err}")))?;
        self.resolve(py)
    }

    /// How many forwards are under way (handed out and not yet finished).
    #[getter]
    fn tasks(&self) -> usize {
        self.completions.pending.load(Ordering::Relaxed)
    }

    /// Cancels the forward that would resolve `future` (its client went away): the connection
    /// to the cell is dropped, the cell slot and breaker permit are given back and nothing is
    /// counted against the cell. Says whether a forward was still under way.
    fn cancel(&self, future: &Bound<'_, PyAny>) -> bool {
        let task = self
            .completions
            .running
            .lock()
            .ok()
            .and_then(|mut running| running.remove(&(future.as_ptr() as usize)));
        match task {
            Some(cancel) => {
                cancel.notify_one();
                true
            }
            None => false,
        }
    }

    /// A future resolved with None through one wake-up of the loop: the bridge's cost alone.
    fn noop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (future, pending) = self.pending(py, String::new(), None)?;
        pending.complete(Outcome::Nothing);
        Ok(future)
    }
}
