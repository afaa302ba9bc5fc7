//! `Clock`: the system clock, or a manual one a test drives.

use crate::clock::Clock;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn to_us(seconds: f64) -> PyResult<u64> {
    if seconds.is_finite() && seconds >= 0.0 {
        Ok((seconds * 1e6).round() as u64)
    } else {
        Err(PyValueError::new_err(format!(
            "time must be a finite number >= 0, got {seconds}"
        )))
    }
}

/// The time source of a router: `Clock()` is the system clock, `Clock.manual(t)` a test clock.
#[pyclass(name = "Clock", frozen, module = "cellgate._core")]
pub struct PyClock {
    pub inner: Clock,
}

#[pymethods]
impl PyClock {
    #[new]
    fn new() -> Self {
        PyClock {
            inner: Clock::System,
        }
    }

    /// A manual clock starting at `start_s` seconds since the epoch.
    #[staticmethod]
    fn manual(start_s: f64) -> PyResult<Self> {
        Ok(PyClock {
            inner: Clock::manual(to_us(start_s)?),
        })
    }

    /// Whether the clock only moves when told to.
    #[getter]
    fn is_manual(&self) -> bool {
        matches!(self.inner, Clock::Manual(_))
    }

    /// The current time in seconds since the epoch.
    fn now(&self) -> f64 {
        self.inner.now_us() as f64 / 1e6
    }

    /// Sets a manual clock to `t_s` seconds since the epoch.
    fn set(&self, t_s: f64) -> PyResult<()> {
        if self.inner.set_us(to_us(t_s)?) {
            Ok(())
        } else {
            Err(PyValueError::new_err("the system clock cannot be set"))
        }
    }

    /// Moves a manual clock forward by `dt_s` seconds.
    fn advance(&self, dt_s: f64) -> PyResult<()> {
        let now = self.inner.now_us();
        self.set((now + to_us(dt_s)?) as f64 / 1e6)
    }

    fn __repr__(&self) -> String {
        match self.inner {
            Clock::System => "Clock()".into(),
            Clock::Manual(_) => format!("Clock.manual({})", self.now()),
        }
    }
}
