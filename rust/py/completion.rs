//! The awaitable a forward returns: an asyncio-compatible future the bridge resolves itself.
//!
//! An `asyncio.Future` resolved from the bridge's reader callback schedules its waiters with
//! `loop.call_soon`, so the waiting task resumes one loop iteration later, through a handle
//! allocated per request. A `Completion` is resolved in the same callback and, when the bridge
//! drains, runs its waiters at once: the answer goes out in the turn that read it. It speaks the
//! protocol asyncio's tasks, `gather`, `wait_for` and granian's scheduler use for any future
//! (`_asyncio_future_blocking`, `add_done_callback`, `result`, `cancel`, `get_loop`).

use pyo3::exceptions::PyStopIteration;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;
use std::cell::{Cell, RefCell};

/// A done callback and the context it runs in.
type Waiter = (Py<PyAny>, Option<Py<PyAny>>);

enum State {
    Waiting(Vec<Waiter>),
    Done(PyResult<Py<PyAny>>),
    Cancelled(Option<String>),
}

/// A future of one event loop, resolved by that loop's bridge.
#[pyclass(name = "Completion", unsendable, module = "cellgate._core")]
pub struct PyCompletion {
    event_loop: Py<PyAny>,
    state: RefCell<State>,
    blocking: Cell<bool>,
}

impl PyCompletion {
    pub fn new(event_loop: Py<PyAny>) -> Self {
        PyCompletion {
            event_loop,
            state: RefCell::new(State::Waiting(Vec::new())),
            blocking: Cell::new(false),
        }
    }

    /// Resolves with `result` unless cancelled meanwhile. With `now`, the waiters run before
    /// this returns (call it only where no task is running: the bridge's reader callback);
    /// otherwise they are scheduled on the loop, as asyncio does.
    pub fn resolve(slf: &Bound<'_, Self>, result: PyResult<Py<PyAny>>, now: bool) {
        let waiters = {
            let this = slf.borrow();
            let mut state = this.state.borrow_mut();
            match &mut *state {
                State::Waiting(waiters) => {
                    let waiters = std::mem::take(waiters);
                    *state = State::Done(result);
                    waiters
                }
                _ => return,
            }
        };
        run_waiters(slf, waiters, now);
    }
}

fn run_waiters(slf: &Bound<'_, PyCompletion>, waiters: Vec<Waiter>, now: bool) {
    let py = slf.py();
    for (callback, context) in waiters {
        let ran = if now {
            match &context {
                Some(context) => context
                    .call_method1(py, intern!(py, "run"), (&callback, slf))
                    .map(drop),
                None => callback.call1(py, (slf,)).map(drop),
            }
        } else {
            schedule(slf, callback, context)
        };
        if let Err(err) = ran {
            report_callback_error(slf, err);
        }
    }
}

fn schedule(
    slf: &Bound<'_, PyCompletion>,
    callback: Py<PyAny>,
    context: Option<Py<PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    let kwargs = PyDict::new(py);
    kwargs.set_item(intern!(py, "context"), context)?;
    slf.borrow()
        .event_loop
        .call_method(py, intern!(py, "call_soon"), (callback, slf), Some(&kwargs))
        .map(drop)
}

/// A done callback that raised goes to the loop's exception handler, as asyncio does with it.
fn report_callback_error(slf: &Bound<'_, PyCompletion>, err: PyErr) {
    let py = slf.py();
    let report = || -> PyResult<()> {
        let context = PyDict::new(py);
        context.set_item("message", "Exception in a cellgate Completion callback")?;
        context.set_item("exception", err.value(py))?;
        context.set_item("future", slf)?;
        slf.borrow().event_loop.call_method1(
            py,
            intern!(py, "call_exception_handler"),
            (context,),
        )?;
        Ok(())
    };
    if let Err(unreported) = report() {
        unreported.write_unraisable(py, Some(slf.as_any()));
    }
}

fn cancelled_error(py: Python<'_>, message: Option<&str>) -> PyErr {
    static CANCELLED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let made = CANCELLED
        .get_or_try_init(py, || {
            py.import("asyncio")?
                .getattr("CancelledError")
                .map(Bound::unbind)
        })
        .and_then(|class| class.call1(py, (message,)));
    match made {
        Ok(instance) => PyErr::from_value(instance.into_bound(py)),
        Err(err) => err,
    }
}

fn invalid_state(py: Python<'_>, message: &str) -> PyErr {
    static INVALID: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let made = INVALID
        .get_or_try_init(py, || {
            py.import("asyncio")?
                .getattr("InvalidStateError")
                .map(Bound::unbind)
        })
        .and_then(|class| class.call1(py, (message,)));
    match made {
        Ok(instance) => PyErr::from_value(instance.into_bound(py)),
        Err(err) => err,
    }
}

#[pymethods]
impl PyCompletion {
    #[new]
    fn py_new(event_loop: Py<PyAny>) -> Self {
        PyCompletion::new(event_loop)
    }

    #[getter(_asyncio_future_blocking)]
    fn get_blocking(&self) -> bool {
        self.blocking.get()
    }

    #[setter(_asyncio_future_blocking)]
    fn set_blocking(&self, value: bool) {
        self.blocking.set(value);
    }

    fn get_loop(&self, py: Python<'_>) -> Py<PyAny> {
        self.event_loop.clone_ref(py)
    }

    fn done(&self) -> bool {
        !matches!(&*self.state.borrow(), State::Waiting(_))
    }

    fn cancelled(&self) -> bool {
        matches!(&*self.state.borrow(), State::Cancelled(_))
    }

    fn result(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        match &*self.state.borrow() {
            State::Done(Ok(value)) => Ok(value.clone_ref(py)),
            State::Done(Err(err)) => Err(err.clone_ref(py)),
            State::Cancelled(message) => Err(cancelled_error(py, message.as_deref())),
            State::Waiting(_) => Err(invalid_state(py, "Result is not ready.")),
        }
    }

    fn exception(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &*self.state.borrow() {
            State::Done(Ok(_)) => Ok(None),
            State::Done(Err(err)) => Ok(Some(err.value(py).clone().into_any().unbind())),
            State::Cancelled(message) => Err(cancelled_error(py, message.as_deref())),
            State::Waiting(_) => Err(invalid_state(py, "Exception is not set.")),
        }
    }

    #[pyo3(signature = (callback, *, context = None))]
    fn add_done_callback(
        slf: &Bound<'_, Self>,
        callback: Py<PyAny>,
        context: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        {
            let this = slf.borrow();
            let mut state = this.state.borrow_mut();
            if let State::Waiting(waiters) = &mut *state {
                waiters.push((callback, context));
                return Ok(());
            }
        }
        schedule(slf, callback, context)
    }

    fn remove_done_callback(&self, py: Python<'_>, callback: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut state = self.state.borrow_mut();
        let State::Waiting(waiters) = &mut *state else {
            return Ok(0);
        };
        let before = waiters.len();
        let mut kept = Vec::with_capacity(before);
        for (waiter, context) in waiters.drain(..) {
            if waiter.bind(py).eq(callback)? {
                continue;
            }
            kept.push((waiter, context));
        }
        *waiters = kept;
        Ok(before - waiters.len())
    }

    /// Cancels a waiting completion: its waiters see CancelledError, and the forward's answer,
    /// when it comes, is dropped (the cell's outcome is still reported to the core).
    #[pyo3(signature = (msg = None))]
    fn cancel(slf: &Bound<'_, Self>, msg: Option<String>) -> bool {
        let waiters = {
            let this = slf.borrow();
            let mut state = this.state.borrow_mut();
            match &mut *state {
                State::Waiting(waiters) => {
                    let waiters = std::mem::take(waiters);
                    *state = State::Cancelled(msg);
                    waiters
                }
                _ => return false,
            }
        };
        run_waiters(slf, waiters, false);
        true
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Yields itself to the task while waiting, then returns the result.
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Option<Py<PyAny>>> {
        let py = slf.py();
        let this = slf.borrow();
        let state = this.state.borrow();
        match &*state {
            State::Waiting(_) => {
                this.blocking.set(true);
                Ok(Some(slf.clone().into_any().unbind()))
            }
            State::Done(Ok(value)) => Err(PyStopIteration::new_err((value.clone_ref(py),))),
            State::Done(Err(err)) => Err(err.clone_ref(py)),
            State::Cancelled(message) => Err(cancelled_error(py, message.as_deref())),
        }
    }

    fn __repr__(&self) -> &'static str {
        match &*self.state.borrow() {
            State::Waiting(_) => "<Completion pending>",
            State::Done(Ok(_)) => "<Completion finished>",
            State::Done(Err(_)) => "<Completion failed>",
            State::Cancelled(_) => "<Completion cancelled>",
        }
    }
}
