//! How a completion on the I/O runtime wakes the asyncio loop, in one place.
//!
//! Completions go into a lock-free queue; the first one after a drain writes an eventfd the loop
//! watches (`loop.add_reader`). The loop's reader callback, `Bridge.drain`, resolves every queued
//! future in one wake-up. The I/O threads never take the GIL.

use crate::forward::Answer;
use crate::py::decision::{problem_triple, response_triple};
use crate::reason::{Reason, Refusal};
use crossbeam_queue::SegQueue;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a future is resolved with.
pub enum Outcome {
    /// The cell answered.
    Answer { answer: Answer, request_id: String },
    /// The forward failed; the client gets the problem+json.
    Refused {
        refusal: Refusal,
        request_id: String,
    },
    /// Nothing: resolves the future with None (the bridge measured alone).
    Nothing,
}

impl Outcome {
    fn into_py(self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match self {
            Outcome::Answer { answer, request_id } => {
                let headers = answer
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
                    .chain(std::iter::once((
                        "x-request-id",
                        request_id.as_str().into(),
                    )));
                Ok(response_triple(py, answer.status, headers, &answer.body)?
                    .unbind()
                    .into_any())
            }
            Outcome::Refused {
                refusal,
                request_id,
            } => Ok(problem_triple(py, &refusal, &request_id)?
                .unbind()
                .into_any()),
            Outcome::Nothing => Ok(py.None()),
        }
    }
}

/// The queue of finished work and the eventfd that announces it.
pub struct Completions {
    queue: SegQueue<(Py<PyAny>, Outcome)>,
    armed: AtomicBool,
    eventfd: OwnedFd,
}

impl Completions {
    fn new() -> std::io::Result<Self> {
        // SAFETY: eventfd returns a new descriptor we own, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Completions {
            queue: SegQueue::new(),
            armed: AtomicBool::new(false),
            // SAFETY: fd is valid and owned by nobody else.
            eventfd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    fn push(&self, future: Py<PyAny>, outcome: Outcome) {
        self.queue.push((future, outcome));
        if !self.armed.swap(true, Ordering::AcqRel) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a live u64 to our eventfd. A full counter (EAGAIN)
            // still leaves the descriptor readable, so the wake-up is not lost.
            unsafe {
                libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8);
            }
        }
    }
}

/// A future waiting for its outcome. If the work ends without completing it (a panic, a dropped
/// task), dropping this completes it with a 500 problem, so no request waits forever.
pub struct Pending {
    completions: Arc<Completions>,
    future: Option<Py<PyAny>>,
    request_id: String,
}

impl Pending {
    /// Resolves the future with `outcome`.
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
            let request_id = std::mem::take(&mut self.request_id);
            self.completions.push(
                future,
                Outcome::Refused {
                    refusal,
                    request_id,
                },
            );
        }
    }
}

/// One event loop's end of the bridge: make futures, and resolve them when work completes.
#[pyclass(name = "Bridge", frozen, module = "cellgate._core")]
pub struct PyBridge {
    completions: Arc<Completions>,
    create_future: Py<PyAny>,
}

impl PyBridge {
    /// A new asyncio future of this loop and the pending handle that will resolve it.
    pub fn pending(&self, py: Python<'_>, request_id: String) -> PyResult<(Py<PyAny>, Pending)> {
        let future = self.create_future.call0(py)?;
        let pending = Pending {
            completions: self.completions.clone(),
            future: Some(future.clone_ref(py)),
            request_id,
        };
        Ok((future, pending))
    }
}

#[pymethods]
impl PyBridge {
    /// A bridge for `loop`; register it with `loop.add_reader(bridge.fileno(), bridge.drain)`.
    #[new]
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        let completions =
            Completions::new().map_err(|err| PyOSError::new_err(format!("eventfd: {err}")))?;
        Ok(PyBridge {
            completions: Arc::new(completions),
            create_future: event_loop.getattr("create_future")?.unbind(),
        })
    }

    /// The descriptor that becomes readable when completions are waiting.
    fn fileno(&self) -> i32 {
        self.completions.eventfd.as_raw_fd()
    }

    /// Resolves every waiting future; returns how many. Call it from the loop's reader callback.
    fn drain(&self, py: Python<'_>) -> PyResult<usize> {
        let mut counter = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live buffer; EAGAIN (nothing to read) is fine.
        unsafe {
            libc::read(
                self.completions.eventfd.as_raw_fd(),
                counter.as_mut_ptr().cast(),
                8,
            );
        }
        self.completions.armed.store(false, Ordering::Release);
        let set_result = intern!(py, "set_result");
        let mut resolved = 0;
        while let Some((future, outcome)) = self.completions.queue.pop() {
            let value = outcome.into_py(py)?;
            // A future cancelled meanwhile refuses a result; nobody is waiting for it then.
            if future.call_method1(py, set_result, (value,)).is_ok() {
                resolved += 1;
            }
        }
        Ok(resolved)
    }

    /// A future resolved with None from the I/O runtime: the bridge's cost, measured alone.
    fn noop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (future, pending) = self.pending(py, String::new())?;
        crate::runtime::runtime().spawn(async move { pending.complete(Outcome::Nothing) });
        Ok(future)
    }
}
