//! How a finished forward reaches the asyncio loop, in one place.
//!
//! A bridge belongs to one event loop. The loop watches the bridge's descriptor (a mio poll with
//! every cell socket in it) and calls `Bridge.drain` when it is readable; a forward runs as a task
//! on the bridge's executor, on the loop's own thread. So a request never changes threads inside
//! cellgate: granian hands it to the loop, the loop writes it to the cell, the cell's answer wakes
//! the loop, and the loop answers. Futures finished in one turn are resolved together.

use crate::driver::executor::Executor;
use crate::driver::reactor::Reactor;
use crate::forward::pool::Pools;
use crate::forward::Answer;
use crate::py::decision::{problem_triple, response_triple};
use crate::reason::{Reason, Refusal};
use crate::router::Router;
use crate::trace::TraceContext;
use hyper::header::HeaderValue;
use pyo3::exceptions::PyOSError;
use pyo3::intern;
use pyo3::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

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

/// Futures finished and waiting to be resolved, in the order they finished.
#[derive(Default)]
struct Completions {
    done: RefCell<Vec<(Py<PyAny>, Outcome)>>,
}

/// A future waiting for its outcome. If its task ends without completing it (a panic, a dropped
/// task), dropping this completes it with a 500 problem, so no request waits forever.
pub struct Pending {
    completions: Rc<Completions>,
    future: Option<Py<PyAny>>,
    request_id: String,
    trace: Option<TraceContext>,
}

impl Pending {
    /// Resolves the future with `outcome` at the end of this turn.
    pub fn complete(mut self, outcome: Outcome) {
        if let Some(future) = self.future.take() {
            self.completions.done.borrow_mut().push((future, outcome));
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            let refusal = Refusal::new(Reason::Internal, "the forward ended without an answer");
            let request_id = std::mem::take(&mut self.request_id);
            let outcome = Outcome::Refused {
                refusal,
                request_id,
                trace: self.trace,
            };
            self.completions.done.borrow_mut().push((future, outcome));
        }
    }
}

/// Outcomes made on another thread (forwards on the tokio transport), with their futures; the
/// loop's descriptor is nudged once per batch, when the first one arrives.
pub struct RemoteCompletions {
    done: Mutex<Vec<(Py<PyAny>, Outcome)>>,
    nudge: Arc<mio::Waker>,
}

impl RemoteCompletions {
    fn push(&self, future: Py<PyAny>, outcome: Outcome) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        let first = done.is_empty();
        done.push((future, outcome));
        drop(done);
        if first {
            // A failed nudge leaves the outcome to the next wake-up of the loop.
            let _ = self.nudge.wake();
        }
    }

    fn take(&self) -> Vec<(Py<PyAny>, Outcome)> {
        self.done
            .lock()
            .map(|mut done| std::mem::take(&mut *done))
            .unwrap_or_default()
    }
}

/// A future whose outcome another thread makes. If its task ends without completing it (a
/// panic, a dropped task), dropping this completes it with a 500 problem.
pub struct RemotePending {
    remote: Arc<RemoteCompletions>,
    future: Option<Py<PyAny>>,
    request_id: String,
    trace: Option<TraceContext>,
}

impl RemotePending {
    /// Hands `outcome` to the loop, which resolves the future at its next wake-up.
    pub fn complete(mut self, outcome: Outcome) {
        if let Some(future) = self.future.take() {
            self.remote.push(future, outcome);
        }
    }
}

impl Drop for RemotePending {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            let refusal = Refusal::new(Reason::Internal, "the forward ended without an answer");
            let outcome = Outcome::Refused {
                refusal,
                request_id: std::mem::take(&mut self.request_id),
                trace: self.trace,
            };
            self.remote.push(future, outcome);
        }
    }
}

/// One event loop's end of the core: its reactor, its tasks, its connections to the cells.
#[pyclass(name = "Bridge", unsendable, module = "cellgate._core")]
pub struct PyBridge {
    reactor: Rc<Reactor>,
    executor: Rc<Executor>,
    completions: Rc<Completions>,
    /// The connection pools of the router last forwarded for (one router per worker in practice).
    pools: RefCell<Option<(Arc<Router>, Rc<Pools>)>>,
    create_future: Py<PyAny>,
    remote: Arc<RemoteCompletions>,
}

impl PyBridge {
    /// A new asyncio future of this loop and the pending handle that will resolve it.
    pub fn pending(
        &self,
        py: Python<'_>,
        request_id: String,
        trace: Option<TraceContext>,
    ) -> PyResult<(Py<PyAny>, Pending)> {
        let future = self.create_future.call0(py)?;
        let pending = Pending {
            completions: self.completions.clone(),
            future: Some(future.clone_ref(py)),
            request_id,
            trace,
        };
        Ok((future, pending))
    }

    /// A new asyncio future of this loop and the handle another thread resolves it with.
    pub fn remote_pending(
        &self,
        py: Python<'_>,
        request_id: String,
        trace: Option<TraceContext>,
    ) -> PyResult<(Py<PyAny>, RemotePending)> {
        let future = self.create_future.call0(py)?;
        let pending = RemotePending {
            remote: self.remote.clone(),
            future: Some(future.clone_ref(py)),
            request_id,
            trace,
        };
        Ok((future, pending))
    }

    /// This loop's connection pools for `router`.
    pub fn pools(&self, router: &Arc<Router>) -> Rc<Pools> {
        let mut slot = self.pools.borrow_mut();
        if let Some((owner, pools)) = &*slot {
            if Arc::ptr_eq(owner, router) {
                return pools.clone();
            }
        }
        let pools = Rc::new(Pools::new(
            self.reactor.clone(),
            self.executor.clone(),
            router.forward_settings(),
        ));
        *slot = Some((router.clone(), pools.clone()));
        pools
    }

    /// Starts `task` now: it runs until it first waits (a forward writes its request).
    pub fn start(&self, py: Python<'_>, task: impl Future<Output = ()> + 'static) -> PyResult<()> {
        self.executor.spawn(task);
        self.executor.run();
        self.resolve(py)
    }

    fn resolve(&self, py: Python<'_>) -> PyResult<()> {
        let mut done = std::mem::take(&mut *self.completions.done.borrow_mut());
        done.extend(self.remote.take());
        let set_result = intern!(py, "set_result");
        let mut first_error = None;
        for (future, outcome) in done {
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

impl Drop for PyBridge {
    fn drop(&mut self) {
        // Tasks hold the pools and the pools the executor: clearing the tasks breaks that cycle.
        self.pools.borrow_mut().take();
        self.executor.clear();
    }
}

#[pymethods]
impl PyBridge {
    /// A bridge for `loop`; register it with `loop.add_reader(bridge.fileno(), bridge.drain)`.
    #[new]
    fn new(event_loop: &Bound<'_, PyAny>) -> PyResult<Self> {
        let reactor =
            Reactor::new().map_err(|err| PyOSError::new_err(format!("reactor: {err}")))?;
        let remote = Arc::new(RemoteCompletions {
            done: Mutex::new(Vec::new()),
            nudge: reactor.remote_nudge(),
        });
        Ok(PyBridge {
            remote,
            reactor: Rc::new(reactor),
            executor: Rc::new(Executor::default()),
            completions: Rc::new(Completions::default()),
            pools: RefCell::new(None),
            create_future: event_loop.getattr("create_future")?.unbind(),
        })
    }

    /// The descriptor that becomes readable when a cell socket, a timer or a completion is ready.
    fn fileno(&self) -> i32 {
        self.reactor.fd()
    }

    /// Runs what became ready and resolves every future that finished. Call it from the loop's
    /// reader callback.
    fn drain(&self, py: Python<'_>) -> PyResult<()> {
        self.reactor
            .turn()
            .map_err(|err| PyOSError::new_err(format!("reactor: {err}")))?;
        self.executor.run();
        self.resolve(py)
    }

    /// How many tasks (forwards and connection drivers) are alive on this bridge.
    #[getter]
    fn tasks(&self) -> usize {
        self.executor.len()
    }

    /// A future resolved with None through one wake-up of the loop: the bridge's cost alone.
    fn noop(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let (future, pending) = self.pending(py, String::new(), None)?;
        pending.complete(Outcome::Nothing);
        self.reactor.nudge();
        Ok(future)
    }
}
